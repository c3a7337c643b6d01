"""The advantage estimators of stage 3: one registry of pure functions, one signature.

Every estimator takes per-token rewards and the action mask of a rollout batch and returns
(advantages, returns), both [B, T]. The rewards hold the sequence score on each answer's last
action token, and minus ``kl_coef`` x the per-token KL on every action when the KL is in the
reward (PPO and REINFORCE++ always; the group estimators with ``kl_in_reward``). Rows are grouped
``group`` at a time: the answers to one prompt are consecutive (``repeat_batch``).

    @register_advantage("my_algo", group=True)
    def my_algo(rewards, mask, *, group=1, **_):
        ...

adds ``--algo my_algo`` (critic-free unless ``critic=True``): the config choices, ``train.py``'s
algorithm list and plan, and its preset come from this registry. An entry is the algorithm's one
record: its estimator, its policy loss (``policy_losses.py``) and what it needs (a critic, groups,
a greedy baseline, refilled batches); nothing else compares the algorithm's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..config import ConfigError
from .maths import gae, group_advantages, masked_whiten
from .policy_losses import POLICY_LOSSES, PolicyLoss


@dataclass(frozen=True)
class Estimator:
    name: str
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    critic: bool = False            # needs the critic's values (PPO's GAE)
    group: bool = False             # compares the answers to one prompt (num_samples_per_prompt >= 2)
    greedy_baseline: bool = False   # needs the reward of each prompt's greedy answer (ReMax)
    kl_shaped_reward: bool = False  # its reward carries the KL penalty by definition (PPO, REINFORCE++)
    policy_loss: str = "clip"       # its loss in policy_losses.POLICY_LOSSES (dpo: DPO on ranked pairs)
    dynamic_sampling: bool = False  # groups whose answers all score alike are dropped and the batch refilled (DAPO)
    unbiased: bool = False          # Dr. GRPO: no division by the group's std, a constant length normaliser


ESTIMATORS: dict[str, Estimator] = {}


def register_advantage(name: str, **flags) -> Callable:
    def add(fn):
        if name in ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        ESTIMATORS[name] = Estimator(name, fn, **flags)
        return fn
    return add


def estimator_for(algo: str) -> Estimator:
    """The record behind ``--algo``."""
    if algo not in ESTIMATORS:
        raise ConfigError(f"unknown algo {algo!r}: choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[algo]


@dataclass(frozen=True)
class Algorithm:
    """The run's algorithm, looked up once from ``--algo`` and ``--policy_loss`` (``algorithm(rl_cfg)``) and
    handed to every part of stage 3: the estimator record, the policy loss, and what follows from them."""
    estimator: Estimator
    loss: PolicyLoss
    kl_in_reward: bool        # the KL to the reference is in the per-token reward (else a k3 loss term)
    loss_agg: str             # the policy loss reduction (Dr. GRPO: constant)
    std_normalize: bool       # GRPO's division by the group's std (not Dr. GRPO's)
    needs_reference: bool     # a KL term, PPO, or online DPO's loss reads the reference model

    @property
    def name(self) -> str:
        return self.estimator.name

    @property
    def critic(self) -> bool:
        return self.estimator.critic


def algorithm(rl_cfg) -> Algorithm:
    """The record of ``rl_cfg.algo`` with the run's policy loss (``--policy_loss`` when given, else the
    algorithm's own), the KL's place and the loss reduction."""
    est = estimator_for(rl_cfg.algo)
    name = rl_cfg.loss.policy_loss or est.policy_loss
    if name not in POLICY_LOSSES:
        raise ConfigError(f"unknown policy_loss {name!r}: choose one of {', '.join(POLICY_LOSSES)}")
    loss = POLICY_LOSSES[name]
    return Algorithm(est, loss, kl_in_reward=rl_cfg.kl.kl_in_reward or est.kl_shaped_reward,
                     loss_agg="constant" if est.unbiased else rl_cfg.loss.loss_agg,
                     std_normalize=rl_cfg.loss.std_normalize and not est.unbiased,
                     needs_reference=est.critic or rl_cfg.kl.kl_coef > 0 or loss.pairs)


def check(rl_cfg) -> None:
    """The algorithm's rules on stage 3's settings (``ConfigError`` naming the flags)."""
    p, algo = rl_cfg, algorithm(rl_cfg)
    est = algo.estimator
    if est.group and p.rollout.num_samples_per_prompt < 2:
        raise ConfigError(f"{p.algo} compares answers to the same prompt: set num_samples_per_prompt >= 2")
    if p.loss.policy_loss and POLICY_LOSSES[est.policy_loss].pairs:
        raise ConfigError(f"{p.algo} trains with the DPO loss on ranked pairs: --policy_loss does not apply to it")
    if algo.loss.pairs and p.rollout.num_samples_per_prompt != 2:
        raise ConfigError(f"{p.algo} ranks pairs of answers: set num_samples_per_prompt 2")
    if p.rollout.dynamic_filtering and not (est.group or est.greedy_baseline):
        raise ConfigError(f"dynamic_filtering drops groups of answers without a learning signal; {p.algo} "
                          f"has no groups (drop --dynamic_filtering)")
    if p.loss.group_baseline and (not est.critic or p.rollout.num_samples_per_prompt < 2):
        raise ConfigError("group_baseline is a PPO option that compares answers to the same prompt: "
                          "use it with --algo ppo and num_samples_per_prompt >= 2")


def critic_free() -> tuple[str, ...]:
    """The ``--algo`` names that train without a critic, in registration order."""
    return tuple(n for n, e in ESTIMATORS.items() if not e.critic)


def sequence_scores(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: the sum of each answer's per-token rewards (its score, less its KL when that is in the reward)."""
    return (rewards * mask).sum(1)


def spread(per_answer: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    adv = per_answer.to(mask.dtype).unsqueeze(1) * mask
    return adv, adv


@register_advantage("ppo", critic=True, kl_shaped_reward=True)
def gae_advantages(rewards, mask, *, values: Optional[torch.Tensor] = None, gamma: float = 1.0,
                   lam: float = 0.95, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO: generalised advantage estimation with the critic's ``values`` [B, T]; returns = adv + values."""
    if values is None:
        raise ValueError("GAE needs the critic's values")
    return gae(rewards, values * mask, mask, gamma, lam)


@register_advantage("grpo", group=True)
def grpo_advantages(rewards, mask, *, group: int = 1, std_normalize: bool = True, **_):
    """GRPO: (score - group mean) / (group std + eps), the same on every token of the answer."""
    return spread(group_advantages(sequence_scores(rewards, mask), group, "mean", std_normalize), mask)


@register_advantage("dr_grpo", group=True, unbiased=True)
def dr_grpo_advantages(rewards, mask, *, group: int = 1, **_):
    """Dr. GRPO: score - group mean (no division by the group's std; the loss uses a constant
    length normaliser, ``loss_agg constant``)."""
    return spread(group_advantages(sequence_scores(rewards, mask), group, "mean", std_normalize=False), mask)


@register_advantage("rloo", group=True)
def rloo_advantages(rewards, mask, *, group: int = 1, **_):
    """RLOO: score - mean score of the other answers to the same prompt."""
    return spread(group_advantages(sequence_scores(rewards, mask), group, "leave_one_out"), mask)


@register_advantage("remax", greedy_baseline=True)
def remax_advantages(rewards, mask, *, group: int = 1, baseline: Optional[torch.Tensor] = None, **_):
    """ReMax: score - the reward of the prompt's greedy answer (``baseline`` [B / group])."""
    return spread(group_advantages(sequence_scores(rewards, mask), group, "given", baseline=baseline), mask)


@register_advantage("online_dpo", group=True, policy_loss="dpo")
def online_dpo_preferences(rewards, mask, *, group: int = 2, **_):
    """Online DPO: the two answers to a prompt ranked by their scores, +1 on the preferred answer's
    tokens and -1 on the other's (0 for a tie: no preference); the DPO loss then trains on the pair."""
    if group != 2:
        raise ValueError(f"online DPO ranks pairs: num_samples_per_prompt must be 2, got {group}")
    s = sequence_scores(rewards, mask).view(-1, 2)
    sign = torch.sign(s - s.flip(1)).view(-1)
    return spread(sign, mask)


@register_advantage("reinforce_pp", kl_shaped_reward=True)
def reinforce_pp_advantages(rewards, mask, *, gamma: float = 1.0, **_):
    """REINFORCE++ (OpenRLHF): returns G_t = sum_{k >= t} gamma^(k - t) r_k over the answer's tokens
    (KL penalty in r), advantages = G whitened over every action token of the batch; no critic."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):       # states outside the mask (tool outputs) carry G through
        running = torch.where(mask[:, t] > 0, rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return masked_whiten(returns, mask), returns * mask


# GRPO's advantages with another loss or batch, one record each. GSPO: one importance ratio per answer.
# DAPO: groups that all score alike are dropped and the batch refilled; its clip-higher, token-level loss and
# overlong shaping are its preset's settings (training/configs/<smollm2|tiny>-dapo.yaml).
register_advantage("gspo", group=True, policy_loss="gspo")(grpo_advantages)
register_advantage("dapo", group=True, dynamic_sampling=True)(grpo_advantages)
