import math

import pytest
import torch

from training.utils.rl.maths import (AdaptiveKLController, RunningMoments, entropy_from_logits, gae, kl_estimate,
                                     masked_mean, masked_whiten, policy_loss, shape_rewards, value_loss)


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
    adv = torch.tensor([1.0, -1.0])
    old = torch.zeros(2)
    lp = torch.log(torch.tensor([1.5, 1.5]))  # ratio 1.5 for both
    loss, frac = policy_loss(lp, old, adv, torch.ones(2), clip_low=0.2)
    # A>0: min(1.5, 1.2) * 1 -> -1.2 ; A<0: max(-(-1)*1.5, ...) -> 1.5 (unclipped is worse)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert frac.item() == pytest.approx(0.5)
    loss_hi, _ = policy_loss(lp, old, adv, torch.ones(2), clip_low=0.2, clip_high=0.28)
    assert loss_hi.item() == pytest.approx((-1.28 + 1.5) / 2)


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
