import math

import pytest
import torch

from training.utils.losses import entropy_from_logits
from training.utils.rl.maths import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    shape_rewards,
    value_loss,
)


def test_kl_estimators():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = math.log(2.0)  # log pi/ref
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(r)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * r * r)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + r)
    with pytest.raises(ValueError):
        kl_estimate(lp, ref, "k9")


def test_shape_rewards_score_on_last_action_and_kl_penalty():
    lp = torch.tensor([[0.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[0.0, -1.5, -0.5, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    rewards, kl = shape_rewards(torch.tensor([10.0]), lp, ref, mask, kl_coef=0.1, clip=5.0)
    assert kl.tolist() == [[0.0, 0.5, -0.5, 0.0]]
    assert rewards[0].tolist() == pytest.approx([0.0, -0.05, 0.05 + 5.0, 0.0])  # score clipped to 5


def test_gae_hand_values():
    r = torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    v = torch.tensor([[0.5, 0.5, 1.0, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    d2 = 2.0 - 1.0                      # last action: next value 0
    d1 = 1.0 + 1.0 - 0.5
    d0 = 0.0 + 0.5 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.5, a2 + 1.0, 0.0])


def test_gae_skips_masked_gaps():
    r = torch.tensor([[1.0, 5.0, 1.0]])
    v = torch.tensor([[0.0, 7.0, 0.0]])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    adv, _ = gae(r, v, m, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([2.0, 0.0, 1.0])


def test_masked_mean_and_whiten():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    w = masked_whiten(x, m)
    assert w.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)  # unbiased std of 1,2,3 is 1


def test_policy_loss_clipping():
    from training.utils.rl.policy_losses import POLICY_LOSSES

    clip = POLICY_LOSSES["clip"].fn
    adv = torch.tensor([1.0, -1.0])
    old = torch.zeros(2)
    lp = torch.log(torch.tensor([1.5, 1.5]))  # ratio 1.5 for both
    loss, m = clip(lp, old, adv, torch.ones(2), clip_low=0.2)
    # A>0: min(1.5, 1.2) * 1 -> -1.2 ; A<0: max(-(-1)*1.5, ...) -> 1.5 (unclipped is worse)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert m["clip_frac"] == pytest.approx(0.5)
    loss_hi, _ = clip(lp, old, adv, torch.ones(2), clip_low=0.2, clip_high=0.28)
    assert loss_hi.item() == pytest.approx((-1.28 + 1.5) / 2)


def test_dual_clip_and_gspo_hand_values():
    from training.utils.rl.policy_losses import POLICY_LOSSES

    # dual-clip, c = 3: a negative advantage with ratio 5 is bounded at -c A = 3 (the plain loss: 5)
    lp, old, adv, mask = torch.log(torch.tensor([[5.0, 0.5]])), torch.zeros(1, 2), torch.tensor([[-1.0, 2.0]]), \
        torch.ones(1, 2)
    loss, m = POLICY_LOSSES["dual_clip"].fn(lp, old, adv, mask, clip_low=0.2, dual_clip_c=3.0)
    assert loss.item() == pytest.approx((3.0 + -2.0 * 0.5) / 2) and m["dual_clip_frac"] == pytest.approx(0.5)
    plain, _ = POLICY_LOSSES["clip"].fn(lp, old, adv, mask, clip_low=0.2)
    assert plain.item() == pytest.approx((5.0 + -2.0 * 0.5) / 2)
    # GSPO: one ratio per answer, exp(mean log-ratio over its tokens): answer 0 exp((ln 2 + 0)/2) = sqrt 2,
    # clipped to 1 + 0.5 = 1.5 is not reached; answer 1 (one token, ratio 4, A = -1): max(4, 1.5) = 4
    lp = torch.log(torch.tensor([[2.0, 1.0, 9.0], [4.0, 9.0, 9.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    loss, m = POLICY_LOSSES["gspo"].fn(lp, torch.zeros(2, 3), adv, mask, clip_low=0.5, clip_high=0.5)
    assert loss.item() == pytest.approx((-math.sqrt(2) + 4.0) / 2) and m["clip_frac"] == 0.0
    loss, m = POLICY_LOSSES["gspo"].fn(lp, torch.zeros(2, 3), adv, mask, clip_low=0.2, clip_high=0.3)
    assert loss.item() == pytest.approx((-1.3 + 4.0) / 2) and m["clip_frac"] == 0.5   # sqrt 2 clipped at 1.3


def test_overlong_penalty_hand_values():
    from training.utils.rl.maths import overlong_penalty

    # limit 10, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at 10 (factor 1), -0.5 with factor 0.5
    got = overlong_penalty(torch.tensor([3, 6, 7, 10]), 10, 4).tolist()
    assert got == [0.0, 0.0, -0.25, -1.0]
    assert overlong_penalty(torch.tensor([10]), 10, 4, 0.5).tolist() == [-0.5]


def test_value_loss_clipping():
    v, old, ret = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0])
    # unclipped (2-3)^2 = 1, clipped v = 1.2 -> (1.2-3)^2 = 3.24 -> max = 3.24
    assert value_loss(v, old, ret, torch.ones(1), clip=0.2).item() == pytest.approx(0.5 * 3.24)


def test_entropy():
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


def test_adaptive_kl_and_running_moments():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert c.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0, 3.0]))
    rm.update(torch.tensor([4.0, 5.0]))
    assert rm.mean == pytest.approx(3.0) and rm.std == pytest.approx(math.sqrt(2.0), rel=1e-6)


@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
def test_answer_only_logprobs_equal_the_full_forward(tiny_tok, kind):
    """The fast path (LM head on the answer states only) against the plain full-sequence forward."""
    from training.utils.losses import token_logprobs
    from training.utils.model import load_causal_lm
    from training.utils.rl.sequences import answer_layout, causal_logprobs, first_action
    from training.utils.shared_prefix import position_ids_from

    model = load_causal_lm(kind, tiny_tok, seed=5).eval()
    torch.manual_seed(0)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    seq = torch.cat([torch.randint(10, 500, (2, 5)), torch.randint(10, 500, (2, 4))], 1)
    seq[0, 6] = tiny_tok.eos_token_id                      # row 0's answer ends early
    attn, action, _, _ = answer_layout(seq, prompt_mask, tiny_tok.eos_token_id)
    pos = position_ids_from(attn)
    with torch.no_grad():
        full = token_logprobs(model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, :-1], seq[:, 1:])
        start = first_action(action)
        fast = causal_logprobs(model, seq, attn, pos, 1.0, start)
    assert start == 4 and fast.shape == full.shape
    torch.testing.assert_close(fast * action, full * action, rtol=0, atol=1e-5)
    assert fast[:, :start].abs().sum() == 0


def test_length_sorted_trimmed_micro_batches_keep_every_log_prob(tiny_tok):
    """Micro-batches cut to their own padding give each row the log-probs of the full padded batch."""
    from training.utils.model import load_causal_lm
    from training.utils.rl.experience import Experience
    from training.utils.rl.sequences import answer_layout, causal_logprobs, first_action, micro_batches
    from training.utils.shared_prefix import position_ids_from

    model = load_causal_lm("tiny", tiny_tok, seed=5).eval()
    torch.manual_seed(1)
    prompt_mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    seq = torch.cat([torch.randint(10, 500, (4, 6)), torch.randint(10, 500, (4, 5))], 1)
    seq[0, 7] = seq[2, 6] = tiny_tok.eos_token_id            # rows 0 and 2: short prompts and short answers
    attn, action, _, _ = answer_layout(seq, prompt_mask, tiny_tok.eos_token_id)
    pos = position_ids_from(attn)
    with torch.no_grad():
        full = causal_logprobs(model, seq, attn, pos, 1.0, first_action(action))
    z = torch.zeros_like(full)
    batch = Experience(seq, attn, pos, action, full, z, z, torch.zeros(4))
    parts = micro_batches(batch, 2)
    # rows 2 and 0 (4 and 5 real tokens, columns 3-6 and 3-7) go together: 3 padding columns on the
    # left and 3 on the right are cut; rows 3 and 1 keep all 11 columns
    assert [p.sequences.shape[1] for p in parts] == [5, 11]
    got = {}
    with torch.no_grad():
        for p in parts:
            lp = causal_logprobs(model, p.sequences, p.attention_mask, p.position_ids, 1.0, first_action(p.action_mask))
            for row in range(p.sequences.shape[0]):
                key = tuple(p.sequences[row][p.attention_mask[row] == 1].tolist())
                got[key] = (
                    (lp[row] * p.action_mask[row]).sum().item(),
                    (p.old_logp[row] * p.action_mask[row]).sum().item(),
                )
    for row in range(4):
        key = tuple(seq[row][attn[row] == 1].tolist())
        want = (full[row] * action[row]).sum().item()
        assert got[key][0] == pytest.approx(want, abs=1e-4) and got[key][1] == pytest.approx(want, abs=1e-6)
