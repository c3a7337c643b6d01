"""The one rollout-and-score path: answer masks, the experience maker's wiring of rewards, KL and
advantages for a critic-free and a critic algorithm, pair filtering, and the ZeRO-3 gather the
Hybrid Engine generates under."""

import math

import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.losses import token_logprobs
from training.utils.rl.advantages import algorithm
from training.utils.rl.experience import ExperienceMaker
from training.utils.rl.hooks import KLCoef
from training.utils.rl.models import Models
from training.utils.rl.sequences import answer_layout
from training.utils.shared_prefix import position_ids_from

EOS = 2


def test_answer_layout_hand_values():
    # prompt width 3 (row 0 left-padded by one); answers of width 4: row 0 ends at its EOS (third
    # answer token), row 1 never emits EOS, row 2 emits EOS first and then junk
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1]])
    seq = torch.tensor([[0, 5, 6, 7, 8, EOS, 9], [4, 5, 6, 7, 8, 9, 9], [4, 5, 6, EOS, 7, EOS, 8]])
    attn, action, end, has_eos = answer_layout(seq, prompt_mask, EOS)
    assert attn.tolist() == [[0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]
    # state s takes the action seq[s + 1]: states 2.. are answer states
    assert action.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]]
    assert end.tolist() == [5, 6, 3] and has_eos.tolist() == [True, False, True]
    assert position_ids_from(attn)[0].tolist() == [0, 0, 1, 2, 3, 4, 4]     # padding repeats the last


class FakeHybrid:
    """Returns fixed answers after the prompts; ``engine`` is a real model, so log-probs are real."""

    def __init__(self, model, answers: torch.Tensor):
        self.engine, self.answers = model, answers

    def generate(self, ids, mask, settings):
        seq = torch.cat([ids, self.answers[:ids.shape[0]]], 1)
        if not settings.return_logprobs:
            return seq
        # the sampling-time log-probs a real engine returns: the new tokens' under the same weights
        attn = torch.cat([mask, torch.ones_like(self.answers[:ids.shape[0]])], 1)
        return seq, _full_logprobs(self.engine, seq, attn, settings.temperature)[:, ids.shape[1] - 1:]

    def eval(self):
        self.engine.eval()


def _full_logprobs(model, seq, attn, temperature):
    pos = position_ids_from(attn)
    with torch.no_grad():
        logits = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, :-1].float()
    return token_logprobs(logits / temperature, seq[:, 1:])


def _maker(flags, model, ref, answers, scores, critic=None):
    cfg = parse_config(flags + ["--max_answer_seq_len", str(answers.shape[1])], stage="rl")
    reward_fn = lambda seq, attn, pos, end, batch, rollout=True: scores[:seq.shape[0]].clone()
    return ExperienceMaker(
        cfg,
        algorithm=algorithm(cfg.rl),
        models=Models(FakeHybrid(model, answers), reference=ref, critic=critic),
        reward_fn=reward_fn,
        tokenizer=_tok(EOS),
        kl=KLCoef(cfg.rl.kl, 1),
    ), cfg


@pytest.fixture(scope="module")
def models(tiny_tok):
    from training.utils.model import load_causal_lm

    return load_causal_lm("tiny", tiny_tok, seed=1).eval(), load_causal_lm("tiny", tiny_tok, seed=2).eval()


def _tok(eos):
    class T:
        eos_token_id = eos
    return T()


def test_grpo_experience_scores_penalises_and_normalises_per_group(models):
    model, ref = models
    prompt = {"input_ids": torch.tensor([[0, 11, 12, 13]]), "attention_mask": torch.tensor([[0, 1, 1, 1]])}
    answers = torch.tensor([[21, 22, EOS], [23, EOS, 0], [24, 25, EOS], [26, 27, 28]])     # the last: no EOS
    maker, cfg = _maker(["--algo", "grpo", "--num_samples_per_prompt", "4", "--kl_coef", "0.1",
                         "--missing_eos_penalty", "0.5", "--temperature", "0.7"], model, ref, answers,
                        torch.tensor([1.0, 0.0, 0.0, 1.0]))
    maker.tok = _tok(EOS)
    exp, m = maker.make(prompt)
    s = torch.tensor([1.0, 0.0, 0.0, 0.5])                   # the answer without EOS pays 0.5
    mean, std = 0.375, math.sqrt((0.625 ** 2 + 2 * 0.375 ** 2 + 0.125 ** 2) / 3)
    want = (s - mean) / (std + 1e-6)
    assert exp.action_mask.sum(1).tolist() == [3, 2, 3, 3]
    per_answer = (exp.advantages * exp.action_mask).sum(1) / exp.action_mask.sum(1)
    assert per_answer.tolist() == pytest.approx(want.tolist(), abs=1e-5)
    assert (exp.advantages * (1 - exp.action_mask)).abs().sum() == 0
    # log-probs at the rollout temperature from the plain full forward of each model
    seq, attn = exp.sequences, exp.attention_mask
    torch.testing.assert_close(exp.old_logp * exp.action_mask, _full_logprobs(model, seq, attn, 0.7) * exp.action_mask,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(exp.ref_logp * exp.action_mask, _full_logprobs(ref, seq, attn, 0.7) * exp.action_mask,
                               rtol=0, atol=1e-5)
    kl = ((exp.old_logp - exp.ref_logp) * exp.action_mask).sum(1).mean().item()
    assert m["kl"] == pytest.approx(kl, abs=1e-5) and abs(kl) > 1e-3      # two different models
    d = exp.ref_logp - exp.old_logp                                  # k3 = exp(ref - pi) - 1 - (ref - pi) >= 0
    k3 = ((torch.exp(d) - 1 - d) * exp.action_mask).sum(1).mean().item()
    assert m["kl_k3"] == pytest.approx(k3, abs=1e-6) and k3 > 0
    assert m["reward"] == pytest.approx(0.5) and m["score_used"] == pytest.approx(0.375)
    assert exp.values is None and exp.returns is None and m["kept_answers"] == 4
    # the sampling-time log-probs, laid out on the action states, against the training forward's: the same
    # weights, so the gap is ~0 (a misaligned layout would put it at several nats)
    assert m["logprob_gap_mean"] < 1e-5 and m["logprob_gap_max"] < 1e-5 and exp.rollout_logp is None


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 0.02)])
def test_sampling_time_logprobs_equal_the_training_forwards(tiny_tok, dtype, bound):
    """transformers' generate with the KV cache, sampled at T = 0.7: each new token's log-prob from
    the logits it was drawn from against the full forward the loss uses, in fp32 (identical up to
    rounding) and in bf16 (within the stated bound)."""
    from training.utils.generation import GenerationSettings, hf_generate
    from training.utils.model import load_causal_lm
    from training.utils.rl.maths import logprob_gap
    from training.utils.rl.sequences import causal_logprobs

    torch.manual_seed(0)
    model = load_causal_lm("tiny", tiny_tok, seed=1).to(dtype).eval()
    tiny_tok.padding_side = "left"
    enc = tiny_tok(["Hello there, how are you", "Write a list"], return_tensors="pt", padding=True)
    tiny_tok.padding_side = "right"
    seq, lp = hf_generate(model, tiny_tok, enc["input_ids"], enc["attention_mask"],
                          GenerationSettings(max_new_tokens=16, temperature=0.7, return_logprobs=True))
    attn, action, _, _ = answer_layout(seq, enc["attention_mask"], tiny_tok.eos_token_id)
    with torch.no_grad():
        train = causal_logprobs(model, seq, attn, position_ids_from(attn), 0.7)
    gap = logprob_gap(torch.nn.functional.pad(lp, (enc["input_ids"].shape[1] - 1, 0)), train, action)
    assert action.sum() >= 16 and gap["logprob_gap_max"] < bound
    if dtype == torch.bfloat16:
        assert gap["logprob_gap_mean"] > 0              # bf16 rounding is seen, and bounded


def test_ppo_experience_gae_with_clipped_score_and_critic_values(models):
    model, _ = models
    prompt = {"input_ids": torch.tensor([[11, 12, 13]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    answers = torch.tensor([[21, 22, EOS]])

    def critic(seq, attn, pos):              # V(s) = 0.1 x s
        return 0.1 * torch.arange(seq.shape[1], dtype=torch.float32).expand(seq.shape[0], -1)
    critic.eval = lambda: None
    # gamma = lambda = 1, no KL, no whitening: A_t = clipped score - V(s_t), returns = clipped score
    maker, _ = _maker(["--kl_coef", "0", "--lam", "1", "--whiten_advantages", "false", "--reward_clip", "5"],
                      model, model, answers, torch.tensor([7.0]), critic)
    maker.tok = _tok(EOS)
    exp, m = maker.make(prompt)
    assert exp.action_mask[0].tolist() == [0, 0, 1, 1, 1]
    assert exp.advantages[0, 2:].tolist() == pytest.approx([5 - 0.2, 5 - 0.3, 5 - 0.4], abs=1e-6)
    assert exp.returns[0, 2:].tolist() == pytest.approx([5.0, 5.0, 5.0], abs=1e-6)
    assert exp.score.tolist() == [7.0] and m["reward"] == 7.0        # the raw score is what is logged
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)                     # reference = actor


def test_online_dpo_drops_tied_pairs_and_keeps_ranked_ones(models):
    model, ref = models
    prompt = {"input_ids": torch.tensor([[11, 12], [13, 14]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    answers = torch.tensor([[21, EOS], [22, EOS], [23, EOS], [24, EOS]])
    maker, _ = _maker(["--algo", "online_dpo", "--num_samples_per_prompt", "2", "--kl_coef", "0"], model, ref,
                      answers, torch.tensor([1.0, 1.0, 0.0, 2.0]))       # prompt 0 tied, prompt 1 prefers answer 2
    maker.tok = _tok(EOS)
    exp, m = maker.make(prompt)
    assert exp.sequences.shape[0] == 2 and m["kept_answers"] == 2
    assert exp.sequences[:, -2].tolist() == [23, 24]
    assert (exp.advantages * exp.action_mask).sum(1).tolist() == [-2.0, 2.0]     # -1 / +1 on each answer token
    tied, _ = _maker(["--algo", "online_dpo", "--num_samples_per_prompt", "2", "--kl_coef", "0"], model, ref,
                     answers, torch.tensor([1.0, 1.0, 3.0, 3.0]))
    tied.tok = _tok(EOS)
    assert tied.make(prompt)[0] is None


def test_truncated_importance_weight_on_hand_values():
    from training.utils.rl.maths import truncated_is_weight
    from training.utils.rl.policy_losses import clipped_surrogate

    train = torch.tensor([[-1.0, -1.0, -2.0, -0.5]])
    rollout = torch.tensor([[-1.0, -1.5, -0.5, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w, cut = truncated_is_weight(train, rollout, mask, cap=1.5)
    # exp(0) = 1, exp(0.5) = 1.6487 -> cut to 1.5, exp(-1.5) = 0.2231, masked -> 0
    assert w[0].tolist() == pytest.approx([1.0, 1.5, math.exp(-1.5), 0.0], abs=1e-6)
    assert cut.tolist() == [[False, True, False, False]]
    # a weight on the advantage scales that token's clipped-surrogate term: ratio 1, so the term is -w A
    adv = torch.tensor([[2.0, -1.0, 4.0, 9.0]])
    logp = torch.zeros(1, 4)
    loss, _ = clipped_surrogate(logp, logp, adv * w, mask)
    assert loss.item() == pytest.approx(-(2.0 * 1.0 - 1.0 * 1.5 + 4.0 * math.exp(-1.5)) / 3, abs=1e-6)


class ShiftedRollout(FakeHybrid):
    """The sampling engine's log-probs differ from the training forward's by ``shift`` per answer token."""
    shift = torch.tensor([0.5, -1.0])

    def generate(self, ids, mask, settings):
        seq, logp = super().generate(ids, mask, settings)
        return seq, logp + self.shift[:ids.shape[0], None]


def test_tis_weights_each_token_by_the_training_over_the_rollout_probability(models):
    model, ref = models
    prompt = {"input_ids": torch.tensor([[11, 12]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    answers = torch.tensor([[21, EOS], [22, EOS]])
    maker, cfg = _maker(["--algo", "grpo", "--num_samples_per_prompt", "2", "--kl_coef", "0", "--rollout_is", "tis",
                         "--rollout_is_cap", "2"], model, None, answers, torch.tensor([1.0, 0.0]))
    maker.he = maker.rollout.engine = ShiftedRollout(model, answers)
    exp, m = maker.make(prompt)
    # rollout = train + shift: w = min(exp(-shift), 2): exp(-0.5) on row 0, exp(1) = 2.72 cut to 2 on row 1
    assert exp.old_logp is not None and exp.is_weight is not None
    assert exp.is_weight[0, 1:].tolist() == pytest.approx([math.exp(-0.5)] * 2, abs=1e-5)
    assert exp.is_weight[1, 1:].tolist() == pytest.approx([2.0, 2.0], abs=1e-6)
    assert m["is_weight_cut_frac"] == pytest.approx(0.5) and m["logprob_gap_mean"] == pytest.approx(0.75, abs=1e-5)
