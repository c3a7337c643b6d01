"""A prompt shared by several rows runs once (shared_prefix.py): equal to the plain forward in fp32
(logits, gradients, DPO sequence log-probs, generated tokens), and the one on-policy update that
skips the old log-prob forward takes the same gradient as the update that computes it."""

import pytest
import torch

from training.utils.generation import GenerationSettings, hf_generate
from training.utils.shared_prefix import buckets, position_ids_from, prefix_groups, prompt_answer_layout, state_logprobs


def test_prefix_groups_hand_values():
    seq = torch.tensor([[0, 5, 6, 9], [0, 5, 6, 8], [4, 5, 6, 7], [0, 5, 6, 1]])
    attn = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    first, inverse = prefix_groups(seq, attn, 3)
    # rows 0 and 1 share [pad 5 6]; row 3 has the same ids but a real first token: its own prefix
    assert inverse[0] == inverse[1] and len({int(inverse[0]), int(inverse[2]), int(inverse[3])}) == 3
    assert sorted(first.tolist()) == [0, 2, 3] and first[inverse[0]] == 0
    assert prefix_groups(seq, attn, 0) is None and prefix_groups(seq[2:], attn[2:], 3) is None


def _group_batch(tok, n=4):
    torch.manual_seed(0)
    prompts = torch.randint(3, 200, (3, 9))
    pm = torch.ones(3, 9, dtype=torch.long)
    pm[0, :3] = 0
    prompts[pm == 0] = tok.pad_token_id
    seq = torch.cat([prompts.repeat_interleave(n, 0), torch.randint(3, 200, (3 * n, 6))], 1)
    attn = torch.cat([pm.repeat_interleave(n, 0), torch.ones(3 * n, 6, dtype=torch.long)], 1)
    attn[1, -2:] = 0                     # answers of different lengths (right padding)
    attn[5, -4:] = 0
    return seq, attn, position_ids_from(attn)


def test_buckets_hand_values():
    # one long answer among short ones: its own bucket (3 x 4 + 1 x 40 + 2 calls of 10 = 72 < 4 x 40 + 10)
    assert buckets([4, 40, 3, 4], call_cost=10) == [[2, 0, 3], [1]]
    assert buckets([4, 40, 3, 4], call_cost=200) == [[2, 0, 3, 1]]      # 160 + 200 < 52 + 400: one bucket
    assert buckets([5, 5], call_cost=0) == [[0, 1]]


@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
def test_shared_forward_equals_plain_forward_and_gradients(kind):
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer(kind)
    model = load_causal_lm(kind, tok, seed=0).train()
    seq, attn, pos = _group_batch(tok)
    attn[7, -5:] = 0                     # a short answer in another group: the answers run in two buckets
    assert len(buckets(attn[:, 9:].sum(1).tolist(), call_cost=2)) == 2
    out = {}
    for share in (False, True):
        model.zero_grad()
        lp, ent = state_logprobs(model, seq, attn, pos, 8, 0.7, share, entropy=True, call_cost=2)  # states 8..: answers
        assert lp.shape == ent.shape == (12, 6)
        (lp * attn[:, 9:]).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        real = attn[:, 9:].bool()
        out[share] = (lp.detach()[real], ent[real], grads)
    for a, b, tol in zip(out[True], out[False], (1e-5, 1e-5, 5e-5)):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
    assert out[False][2].abs().max() > 1.0          # the gradients compared are not all ~0


def test_shared_prefill_generates_the_plain_tokens(tiny_tok):
    from training.utils.model import load_causal_lm

    model = load_causal_lm("tiny", tiny_tok, seed=0).eval()
    seq, attn, _ = _group_batch(tiny_tok)
    ids, mask = seq[:, :9], attn[:, :9]
    for sample in (False, True):
        got = {}
        for share in (False, True):
            torch.manual_seed(1)
            with torch.no_grad():
                got[share] = hf_generate(model, tiny_tok, ids, mask,
                                         GenerationSettings(max_new_tokens=12, do_sample=sample, share_prompt=share))
        assert torch.equal(got[True], got[False])
        assert got[True].shape[1] > 9


def test_dpo_pair_logps_equal_the_right_padded_plain_forward(tiny_tok):
    from plain_reference import answer_mask, sequence_logps

    from training.step2_reward_model_finetuning.dpo_main import pair_logps
    from training.utils.data import PairCollator
    from training.utils.model import load_causal_lm

    model = load_causal_lm("tiny", tiny_tok, seed=0)
    torch.manual_seed(0)
    rows = []
    for plen, c, r in ((5, 3, 6), (9, 4, 2), (7, 1, 1)):
        p = torch.randint(3, 200, (plen,)).tolist()
        rows.append({"chosen_ids": p + torch.randint(3, 200, (c,)).tolist(),
                     "rejected_ids": p + torch.randint(3, 200, (r,)).tolist(), "prompt_len": plen})
    b = PairCollator(tiny_tok.pad_token_id)(rows)
    ids = b["input_ids"]
    with torch.no_grad():
        plain = sequence_logps(model(input_ids=ids, attention_mask=b["attention_mask"]).logits, ids,
                               answer_mask(ids, b["prompt_len"], b["end_index"]))
        for share in (False, True):
            chosen, rejected = pair_logps(model, b, share)
            torch.testing.assert_close(torch.cat([chosen, rejected]), plain, rtol=0, atol=1e-4)
    assert plain.abs().min() > 1.0


@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
def test_reward_pair_scores_and_gradients_equal_the_right_padded_plain_forward(kind):
    from training.step2_reward_model_finetuning.main import pair_scores
    from training.utils.data import PairCollator
    from training.utils.losses import pairwise_loss
    from training.utils.model import ValueModel, end_scores, load_reward_model, load_tokenizer

    tok = load_tokenizer(kind)
    vm = ValueModel(load_reward_model(kind, tok, seed=0)).train()
    torch.manual_seed(0)
    rows = []
    for plen, c, r in ((5, 3, 6), (9, 4, 2), (7, 1, 1), (6, 12, 2)):
        p = torch.randint(3, 200, (plen,)).tolist()
        rows.append({"chosen_ids": p + torch.randint(3, 200, (c,)).tolist(),
                     "rejected_ids": p + torch.randint(3, 200, (r,)).tolist(), "prompt_len": plen})
    b = PairCollator(tok.pad_token_id)(rows)
    seq, attn, _, p = prompt_answer_layout(b)
    assert prefix_groups(seq, attn, p)[0].numel() == 4                  # the shared path runs 4 prompts
    out = {}
    for share in ("plain", False, True):
        vm.zero_grad()
        if share == "plain":        # the whole right-padded rows, scored at each EOS
            c, r = end_scores(vm(b["input_ids"], b["attention_mask"]), b["end_index"]).chunk(2)
        else:
            c, r = pair_scores(vm, b, share)
        pairwise_loss(c, r).backward()
        grads = torch.cat([p.grad.flatten() for p in vm.parameters() if p.grad is not None])
        out[share] = (torch.cat([c, r]).detach(), grads)
    for share in (False, True):
        torch.testing.assert_close(out[share][0], out["plain"][0], rtol=0, atol=1e-4)
        torch.testing.assert_close(out[share][1], out["plain"][1], rtol=0, atol=5e-5)
    assert out["plain"][0].std() > 1e-2 and out["plain"][1].abs().max() > 1e-2     # not all alike / ~0
    vm.model.gradient_checkpointing_enable()      # the cache would be dropped: the plain forward runs instead
    assert vm.is_activation_checkpointing
    torch.testing.assert_close(torch.cat(pair_scores(vm, b, True)).detach(), out["plain"][0], rtol=0, atol=1e-4)


class _Engine:
    """The two calls the trainer makes on an engine, on a plain model."""

    def __init__(self, model):
        self.module = model

    def __call__(self, **kw):
        return self.module(**kw)

    def backward(self, loss):
        loss.backward()

    def step(self):
        pass

    def train(self):
        self.module.train()

    def eval(self):
        self.module.eval()


def test_one_on_policy_update_skips_old_logprobs_with_the_same_gradient(tiny_tok):
    from training.utils.arguments import parse_config
    from training.utils.model import load_causal_lm
    from training.utils.rl.advantages import algorithm
    from training.utils.rl.experience import ExperienceMaker
    from training.utils.rl.hooks import KLCoef
    from training.utils.rl.models import Models
    from training.utils.rl.trainer import RLTrainer

    flags = [
        "--algo",
        "grpo",
        "--num_samples_per_prompt",
        "4",
        "--per_device_generation_batch_size",
        "1",
        "--per_device_training_batch_size",
        "4",
        "--ppo_epochs",
        "1",
        "--kl_coef",
        "0",
        "--max_answer_seq_len",
        "3",
    ]
    cfg = parse_config(flags, stage="rl")
    model = load_causal_lm("tiny", tiny_tok, seed=1)
    engine = _Engine(model)

    class He:
        def __init__(self):
            self.engine, self.module = engine, model

        def generate(self, ids, mask, settings):
            seq = torch.cat([ids, torch.tensor([[21, 22, 2], [23, 2, 0], [24, 25, 2], [26, 2, 0]])], 1)
            return (seq, torch.zeros(4, 3)) if settings.return_logprobs else seq

        def eval(self):
            model.eval()

        def train(self):
            model.train()

    class Tok:
        eos_token_id = 2

    reward = lambda seq, attn, pos, end, batch, rollout=True: torch.tensor([1.0, 0.0, 0.0, 1.0])
    prompt = {"input_ids": torch.tensor([[11, 12, 13]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    grads = {}
    for once in (True, False):
        maker = ExperienceMaker(
            cfg,
            algorithm=algorithm(cfg.rl),
            models=Models(He()),
            reward_fn=reward,
            tokenizer=Tok(),
            kl=KLCoef(cfg.rl.kl, 1),
        )
        assert maker.on_policy_once          # one prompt x 4 answers, one micro-batch of 4, one epoch, no KL
        maker.on_policy_once = once
        exp, _ = maker.make(prompt)
        assert (exp.old_logp is None) == once
        model.zero_grad()
        m = RLTrainer(cfg, algorithm=algorithm(cfg.rl), models=Models(He()), kl=KLCoef(cfg.rl.kl, 1)).policy_step(exp)
        assert m["approx_kl"] == pytest.approx(0.0, abs=1e-6) and m["clip_frac"] == 0.0
        grads[once] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads[True], grads[False], rtol=0, atol=1e-6)
    assert grads[True].abs().max() > 1e-3
    for more in (["--ppo_epochs", "2"], ["--per_device_training_batch_size", "2"], ["--kl_coef", "0.1"]):
        c = parse_config(flags + more, stage="rl")
        ref = model if "--kl_coef" in more else None
        assert not ExperienceMaker(
            c,
            algorithm=algorithm(c.rl),
            models=Models(He(), reference=ref),
            reward_fn=reward,
            tokenizer=Tok(),
            kl=KLCoef(c.rl.kl, 1),
        ).on_policy_once
