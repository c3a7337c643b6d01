"""Pure maths of stage 3: masked statistics, KL estimators, reward shaping, GAE, the clipped policy
and value losses, group advantages, the adaptive KL controller and running reward moments.

No DeepSpeed import here: everything is plain torch on tensors, unit-tested against
hand-computed values.
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance); masked-out entries become 0."""
    mean = masked_mean(x, mask)
    n = mask.sum().clamp(min=2)
    var = ((x - mean) ** 2 * mask).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimators of KL(pi || ref) from samples of pi (Schulman's k1, k2, k3)."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}")


def shape_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, action_mask: torch.Tensor,
                  kl_coef: float, clip: float = 0.0, kl_kind: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL on every action, plus the (clipped) sequence score on the
    last action of each sequence.  Returns (rewards [B, T], per-token KL [B, T])."""
    kl = kl_estimate(logp, ref_logp, kl_kind) * action_mask
    rewards = -kl_coef * kl
    if clip > 0:
        score = score.clamp(-clip, clip)
    last = (action_mask * torch.arange(action_mask.shape[1], device=action_mask.device)).argmax(-1)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0]), last] += score.to(rewards.dtype)
    return rewards * action_mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, action_mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the action positions of each row.

    Positions with mask 0 are skipped (their advantage is 0; the value after the last action is 0).
    Returns (advantages, returns = advantages + values), both [B, T].
    """
    adv = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(last_gae)
    for t in reversed(range(rewards.shape[1])):
        m = action_mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        cur = delta + gamma * lam * last_gae
        adv[:, t] = cur * m
        last_gae = torch.where(m > 0, cur, last_gae)
        next_value = torch.where(m > 0, values[:, t], next_value)
    return adv, (adv + values) * action_mask


def aggregate(x: torch.Tensor, mask: torch.Tensor, how: str = "token", length: int = 0) -> torch.Tensor:
    """Reduce per-token losses [B, T] to a scalar.

    token: mean over every valid token of the batch (DAPO); sequence: mean per sequence, then over
    sequences (GRPO); constant: sum per sequence / ``length``, then mean (Dr. GRPO: no length bias).
    """
    if how == "token":
        return masked_mean(x, mask)
    if how == "sequence":
        return ((x * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    if how == "constant":
        if length <= 0:
            raise ValueError("constant loss aggregation needs a positive length")
        return ((x * mask).sum(1) / length).mean()
    raise ValueError(f"unknown loss aggregation {how!r}")


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * max((v - R)^2, (clip(v, v_old +- clip) - R)^2), masked mean."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)


# --------------------------------------------------------------------------- critic-free advantages

def group_advantages(scores: torch.Tensor, group: int, baseline_kind: str = "mean", std_normalize: bool = True,
                     baseline: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Sequence advantages for ``group`` consecutive samples per prompt; ``scores`` is [P * group].

    mean: (r - group mean) / (group std + eps), no division with ``std_normalize=False`` (GRPO, Dr. GRPO);
    leave_one_out: r - mean of the *other* samples of the group (RLOO, needs group >= 2);
    given: r - ``baseline`` (the reward of the prompt's greedy answer, [P]: ReMax).
    An all-equal group gets zero advantage in every case but ``given``.
    """
    if scores.numel() % group:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group}")
    g = scores.float().view(-1, group)
    if baseline_kind == "mean":
        centred = g - g.mean(1, keepdim=True)
        if std_normalize and group > 1:
            centred = centred / (g.std(1, keepdim=True) + eps)
        return centred.view(-1)
    if baseline_kind == "leave_one_out":
        if group < 2:
            raise ValueError("RLOO needs at least 2 samples per prompt")
        return (g - (g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)
    if baseline_kind == "given":
        if baseline is None or baseline.numel() != g.shape[0]:
            raise ValueError("ReMax needs one greedy-baseline reward per prompt")
        return (g - baseline.float().view(-1, 1)).view(-1)
    raise ValueError(f"unknown group baseline {baseline_kind!r}")


def uniform_groups(scores: torch.Tensor, group: int, tol: float = 1e-6) -> torch.Tensor:
    """[P] bool: groups whose samples all scored the same (no learning signal; dynamic filtering)."""
    g = scores.float().view(-1, group)
    return (g.max(1).values - g.min(1).values) <= tol


def silent_groups(scores: torch.Tensor, advantages: torch.Tensor, group: int, by_advantage: bool = False,
                  tol: float = 1e-6) -> torch.Tensor:
    """[P] bool: groups that carry no learning signal (dropped by dynamic filtering): every sample scored
    the same; with ``by_advantage`` (a greedy baseline, ReMax) every sample tied the prompt's baseline
    (a group of equal scores still teaches when the greedy answer scored differently). ``scores`` and
    ``advantages`` are [P * group]."""
    if by_advantage:
        return advantages.float().view(-1, group).abs().amax(1) <= tol
    return uniform_groups(scores, group, tol)


class AdaptiveKLController:
    """Ziegler et al.: kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        err = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + err * n_steps / self.horizon
        return self.value


class RunningMoments:
    """Running mean and std (Chan et al. parallel update) for reward normalisation."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-8

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        if n == 0:
            return
        m, v = x.float().mean().item(), x.float().var(unbiased=False).item() if n > 1 else 0.0
        delta, tot = m - self.mean, self.count + n
        self.var = (self.var * self.count + v * n + delta ** 2 * self.count * n / tot) / tot
        self.mean += delta * n / tot
        self.count = tot

    @property
    def std(self) -> float:
        return max(self.var, 1e-12) ** 0.5


def logprob_gap(rollout_logp: torch.Tensor, train_logp: torch.Tensor, action: torch.Tensor) -> dict:
    """Mean and max |log p at sampling - log p in the training forward| over the answer tokens
    ([B, L-1] each): ~0 when the rollouts are sampled from the weights the loss sees (one process,
    fp32), the mismatch a separate inference engine brings otherwise."""
    gap = (rollout_logp - train_logp).abs() * action
    return {"logprob_gap_mean": (gap.sum() / action.sum().clamp(min=1)).item(), "logprob_gap_max": gap.max().item()}


def truncated_is_weight(train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                        cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance sampling (TIS) for rollouts from another engine [B, T]: w = min(exp(train_logp
    - rollout_logp), cap) on the action tokens (0 elsewhere), the policy the loss assumes over the one that
    sampled; and the mask of the tokens whose weight was cut to ``cap``."""
    raw = torch.exp((train_logp - rollout_logp).float()) * mask
    return raw.clamp(max=cap), (raw > cap) & (mask > 0)


def overlong_penalty(length: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's overlong reward shaping [B]: 0 up to max_len - buffer tokens, then falling linearly to
    -factor at max_len: ((max_len - buffer) - length) / buffer x factor."""
    return ((max_len - buffer - length.float()) / buffer).clamp(max=0.0) * factor
