"""The policy losses of stage 3: one registry of pure functions, one signature.

Every loss takes the policy's log-probs of the sampled tokens ``logp`` [B, T] (with gradient), the
rollout's ``old_logp`` [B, T], the ``advantages`` [B, T] and the action ``mask`` [B, T], plus the
settings as keywords, and returns (loss, metrics). An algorithm names its loss in the advantage
registry (``advantages.py``); ``--policy_loss`` swaps it for any algorithm.

    @register_policy_loss("my_loss")
    def my_loss(logp, old_logp, advantages, mask, *, clip_low=0.2, **_):
        ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..losses import dpo_loss
from .maths import aggregate, masked_mean


@dataclass(frozen=True)
class PolicyLoss:
    name: str
    fn: Callable[..., tuple[torch.Tensor, dict]]
    pairs: bool = False         # trains on consecutive answer pairs (online DPO): micro-batches keep pairs whole


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str, **flags) -> Callable:
    def add(fn):
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} registered twice")
        POLICY_LOSSES[name] = PolicyLoss(name, fn, **flags)
        return fn
    return add


@register_policy_loss("clip")
def clipped_surrogate(logp, old_logp, advantages, mask, *, clip_low: float = 0.2, clip_high: float = 0.0,
                      agg: str = "token", length: int = 0, **_) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate per token, ratio r = exp(logp - old_logp) kept in [1 - clip_low,
    1 + clip_high] (clip_high 0: symmetric; above clip_low: DAPO's clip-higher), reduced by ``agg``."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + (clip_high or clip_low))
    loss = aggregate(torch.maximum(unclipped, clipped), mask, agg, length)
    return loss, {"clip_frac": masked_mean((clipped > unclipped).float(), mask).item()}


@register_policy_loss("dual_clip")
def dual_clip(logp, old_logp, advantages, mask, *, clip_low: float = 0.2, clip_high: float = 0.0,
              agg: str = "token", length: int = 0, dual_clip_c: float = 3.0, **_) -> tuple[torch.Tensor, dict]:
    """Dual-clip PPO (Ye et al., 2020): the clipped surrogate, and for negative advantages a lower bound
    c x A on the objective, so a token whose ratio has grown large cannot push the loss without limit."""
    ratio = torch.exp(logp - old_logp)
    pg = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_low, 1.0 + (clip_high or clip_low)))
    bounded = torch.where(advantages < 0, torch.minimum(pg, -dual_clip_c * advantages), pg)
    loss = aggregate(bounded, mask, agg, length)
    return loss, {"dual_clip_frac": masked_mean(((advantages < 0) & (bounded < pg)).float(), mask).item()}


@register_policy_loss("gspo")
def sequence_ratio(logp, old_logp, advantages, mask, *, clip_low: float = 3e-4, clip_high: float = 0.0,
                   **_) -> tuple[torch.Tensor, dict]:
    """GSPO (Zheng et al., 2025): one importance ratio per answer, s = exp(mean over its tokens of
    logp - old_logp), clipped to [1 - clip_low, 1 + clip_high] (the paper: 3e-4 / 4e-4), times the
    answer's advantage; the mean over answers."""
    n = mask.sum(1).clamp(min=1)
    s = torch.exp(((logp - old_logp) * mask).sum(1) / n)
    adv = (advantages * mask).sum(1) / n
    unclipped = -adv * s
    clipped = -adv * s.clamp(1.0 - clip_low, 1.0 + (clip_high or clip_low))
    return torch.maximum(unclipped, clipped).mean(), {"clip_frac": (clipped > unclipped).float().mean().item()}


@register_policy_loss("dpo", pairs=True)
def online_dpo(logp, old_logp, advantages, mask, *, ref_logp=None, beta: float = 0.1, **_) -> tuple[torch.Tensor, dict]:
    """Online DPO on consecutive answer pairs: the answer whose advantage is positive is chosen;
    sequence log-probs of the policy against the reference's (``ref_logp``; the rollout's when there is
    none), both at the rollout temperature."""
    pol = (logp * mask).sum(1).view(-1, 2)
    ref = ((ref_logp if ref_logp is not None else old_logp) * mask).sum(1).view(-1, 2)
    first = (advantages.sum(1).view(-1, 2)[:, 0] > 0)
    pick = lambda x, i: torch.where(first, x[:, i], x[:, 1 - i])
    loss, chosen, rejected = dpo_loss(pick(pol, 0), pick(pol, 1), pick(ref, 0), pick(ref, 1), beta)
    return loss, {"dpo_loss": loss.item(), "reward_margin": (chosen - rejected).mean().item()}
