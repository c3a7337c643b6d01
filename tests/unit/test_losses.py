import math

import pytest
import torch
from plain_reference import answer_mask, sequence_logps

from training.utils.losses import (
    causal_lm_loss,
    causal_lm_nll,
    dpo_loss,
    pairwise_loss,
    per_token_pair_loss,
    token_logprobs,
)


def test_token_logprobs_hand_values():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert token_logprobs(logits, torch.tensor([[0]])).item() == pytest.approx(math.log(0.25))


def test_causal_lm_nll_uniform_and_masked():
    v = 8
    logits = torch.zeros(1, 4, v)  # uniform: every token costs log 8
    labels = torch.tensor([[-100, 3, -100, 5]])  # positions 1 and 3 are scored
    total, count = causal_lm_nll(logits, labels)
    assert count.item() == 2 and total.item() == pytest.approx(2 * math.log(v))
    assert causal_lm_loss(logits, labels).item() == pytest.approx(math.log(v))
    # a peaked prediction: logit 2 for the right token at position 0 -> -log(e^2 / (e^2 + 7))
    logits[0, 0, 3] = 2.0
    total, _ = causal_lm_nll(logits, labels)
    want = -math.log(math.e ** 2 / (math.e ** 2 + 7)) + math.log(v)
    assert total.item() == pytest.approx(want, rel=1e-6)


def test_pairwise_loss_and_accuracy_hand_values():
    c, r = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])
    sp = lambda x: math.log(1 + math.exp(-x))  # -log sigmoid(x)
    assert pairwise_loss(c, r).item() == pytest.approx((sp(1) + sp(-1) + sp(0)) / 3)
    assert (c > r).float().mean().item() == pytest.approx(1 / 3)


def test_per_token_pair_loss_hand_values():
    # chosen [5, 6, 7, pad], rejected [5, 6, 9, 9]: diverge at t=2, end = max(3, 4) = 4
    cid, rid = torch.tensor([[5, 6, 7, 0]]), torch.tensor([[5, 6, 9, 9]])
    cv, rv = torch.tensor([[0.0, 0.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    sp = lambda x: math.log(1 + math.exp(-x))
    got = per_token_pair_loss(cv, rv, cid, rid, torch.tensor([3]), torch.tensor([4]))
    assert got.item() == pytest.approx((sp(1.0) + sp(-1.0)) / 2)
    # identical sequences: only the last position counts
    got = per_token_pair_loss(cv, rv, cid, cid, torch.tensor([3]), torch.tensor([3]))
    assert got.item() == pytest.approx(sp(1.0))


def test_answer_mask_and_sequence_logps():
    ids = torch.tensor([[1, 2, 3, 4, 0]])
    m = answer_mask(ids, torch.tensor([2]), torch.tensor([3]))
    assert m.tolist() == [[0, 0, 1, 1, 0]]
    # token t is scored by the logits at t - 1: p(3 | :2) = 3 / 6 and p(3 | :3) = 1 / 5; the other
    # positions' logits favour other tokens strongly, so an off-by-one gives a different sum
    logits = torch.tensor([[[9.0, 0, 0, 0], [0, 0, 0, math.log(3)], [math.log(2), 0, 0, 0], [0, 0, 9.0, 0],
                            [0, 9.0, 0, 0]]])
    assert sequence_logps(logits, ids.clamp(max=3), m).item() == pytest.approx(math.log(0.5) + math.log(0.2))


def test_dpo_loss_hand_values():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    beta = 0.5        # h = (pc - pr) - (rc - rr) = 2
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-beta * 2.0)))
    assert cr.item() == pytest.approx(0.5) and rj.item() == pytest.approx(-0.5)
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.1)
    want = 0.9 * math.log(1 + math.exp(-1.0)) + 0.1 * math.log(1 + math.exp(1.0))
    assert loss.item() == pytest.approx(want)
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta, kind="ipo")
    assert loss.item() == pytest.approx((2.0 - 1.0) ** 2)
    with pytest.raises(ValueError, match="IPO has no label smoothing"):
        dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.1, kind="ipo")


def test_kto_simpo_orpo_losses_hand_values():
    from types import SimpleNamespace

    from training.utils.config import DPOConfig
    from training.utils.losses import PREFERENCE_LOSSES, PairLogps

    assert list(PREFERENCE_LOSSES) == ["sigmoid", "ipo", "kto", "simpo", "orpo"]
    assert DPOConfig.__dataclass_fields__["dpo_loss"].metadata["registry"] == "preference_losses"    # --dpo_loss
    sig = lambda x: 1 / (1 + math.exp(-x))
    pair = PairLogps(torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([-3.0]), torch.tensor([-5.0]),
                     torch.tensor([2.0]), torch.tensor([3.0]))
    # KTO: r_c = -2 - -3 = 1, r_r = -6 - -5 = -1, z = max(0, mean(1, -1)) = 0, beta 0.5, weights 1 and 2
    d = SimpleNamespace(beta=0.5, kto_desirable_weight=1.0, kto_undesirable_weight=2.0, simpo_gamma=0.3)
    loss, c, r = PREFERENCE_LOSSES["kto"].fn(pair, d)
    assert loss.item() == pytest.approx((1 - sig(0.5)) + 2 * (1 - sig(0.5)))
    assert (c.item(), r.item()) == (0.5, -0.5) and PREFERENCE_LOSSES["kto"].needs_reference
    shifted = PairLogps(pair.chosen + 4, pair.rejected, *list(vars(pair).values())[2:])    # r_c = 5: z = 2
    loss, _, _ = PREFERENCE_LOSSES["kto"].fn(shifted, d)
    assert loss.item() == pytest.approx((1 - sig(0.5 * 3)) + 2 * (1 - sig(0.5 * 3)))
    # SimPO: mean log-probs -1 and -2, beta 0.5, gamma 0.3: -log sigmoid(0.5 - 0.3)
    loss, c, r = PREFERENCE_LOSSES["simpo"].fn(pair, d)
    assert loss.item() == pytest.approx(-math.log(sig(0.2))) and (c.item(), r.item()) == (-0.5, -1.0)
    assert not PREFERENCE_LOSSES["simpo"].needs_reference
    # ORPO: log odds of p = e^-1 and e^-2; NLL of the chosen's mean token = 1
    lo = lambda x: x - math.log(1 - math.exp(x))
    loss, c, r = PREFERENCE_LOSSES["orpo"].fn(pair, d)
    assert loss.item() == pytest.approx(1.0 - 0.5 * math.log(sig(lo(-1.0) - lo(-2.0))))
    assert c.item() == pytest.approx(0.5 * lo(-1.0)) and not PREFERENCE_LOSSES["orpo"].needs_reference
    # the DPO and IPO entries are the dpo_loss above
    assert PREFERENCE_LOSSES["sigmoid"].fn(pair, SimpleNamespace(beta=0.5, label_smoothing=0.0))[0].item() == \
        pytest.approx(math.log(1 + math.exp(-0.5 * 2.0)))
