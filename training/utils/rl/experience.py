"""The experience maker: one rollout-and-score path for every stage-3 algorithm.

A prompt batch is answered ``num_samples_per_prompt`` times through the Hybrid Engine, scored by
the reward sources, and turned into an ``Experience``: old and reference log-probs, the critic's
values when the algorithm has a critic, per-token rewards (score on the last action, minus
kl_coef x KL per token when the KL is in the reward), and the advantages of the algorithm's
estimator from ``advantages.py``. Algorithms differ only by that estimator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..generation import GenerationSettings
from .hooks import KLCoef
from .advantages import Algorithm, sequence_scores
from .curriculum import prompt_spread
from .residency import Residency
from .maths import (RunningMoments, group_advantages, kl_estimate, logprob_gap, masked_mean, masked_whiten,
                    overlong_penalty, shape_rewards, silent_groups, truncated_is_weight, uniform_groups)
from ..shared_prefix import position_ids_from
from .rollout import SingleTurn
from .sequences import causal_logprobs, first_action, repeat_batch, select_rows


@dataclass
class Experience:
    """One rollout batch, rows = prompts x answers per prompt (a prompt's answers consecutive)."""
    sequences: torch.Tensor        # [B, L]
    attention_mask: torch.Tensor   # [B, L]
    position_ids: torch.Tensor     # [B, L]
    action_mask: torch.Tensor      # [B, L-1] float
    old_logp: Optional[torch.Tensor]   # [B, L-1]; None when the one update is on-policy (see ExperienceMaker)
    ref_logp: Optional[torch.Tensor]   # [B, L-1] (= old_logp when there is no reference model)
    advantages: torch.Tensor       # [B, L-1]
    score: torch.Tensor            # [B] the reward sources' raw score
    values: Optional[torch.Tensor] = None    # [B, L-1] the critic's values (algorithms with a critic)
    returns: Optional[torch.Tensor] = None   # [B, L-1] the critic's targets
    rollout_logp: Optional[torch.Tensor] = None   # [B, L-1] sampling-time log-probs, kept when old_logp is None
    is_weight: Optional[torch.Tensor] = None      # [B, L-1] --rollout_is tis: min(p_train / p_rollout, cap)

    def select(self, keep: torch.Tensor) -> "Experience":
        return select_rows(self, keep)


class ExperienceMaker:
    """Turns a prompt batch into an Experience (``None`` when no answer carries a learning signal)."""

    def __init__(self, cfg, *, algorithm: Algorithm, models, reward_fn: Callable, tokenizer, kl: KLCoef,
                 residency: Optional[Residency] = None, rollout=None):
        """``cfg``: the run's config (its rl and rewards sections, the answer length, the shared-prompt
        forward); ``models``: ``models.Models`` (the actor's Hybrid Engine; the reference and the critic, None
        when the run has none); ``reward_fn``: ``runner.batch_reward``'s scorer; ``kl``: the KL coefficient,
        shared with the trainer; ``rollout``: the rollout (``rollout.py``; default one answer per prompt through
        the actor)."""
        actor, ref, critic = models.actor, models.reference, models.critic
        self.rollout = rollout or SingleTurn(actor, tokenizer.eos_token_id)
        self.rollout_metrics: dict = {}
        rl_cfg, reward_cfg, max_new_tokens = cfg.rl, cfg.rewards, cfg.data.max_answer_seq_len
        self.share = share_prompt = cfg.model.share_prompt_forward   # a group's prompt runs once in the forwards
        self.he, self.ref, self.critic, self.reward_fn = actor, ref, critic, reward_fn
        self.tok, self.c, self.r, self.kl = tokenizer, rl_cfg, reward_cfg, kl
        self.resident = residency or Residency(False, torch.device("cpu"), {})
        self.est, self.loss = algorithm.estimator, algorithm.loss
        self.kl_in_reward = algorithm.kl_in_reward and ref is not None
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True,
                                           temperature=rl_cfg.rollout.temperature, top_p=rl_cfg.rollout.top_p,
                                           top_k=rl_cfg.rollout.top_k, static_cache=rl_cfg.rollout.static_cache,
                                           share_prompt=share_prompt, return_logprobs=True)
        self.greedy = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False,
                                         static_cache=rl_cfg.rollout.static_cache)
        self.std_normalize = algorithm.std_normalize
        # One optimizer step per rollout batch, taken before the policy moves, and no KL or critic that
        # reads them: the old log-probs are the policy's own (detached) in that step, so their forward is
        # skipped (the trainer uses logp.detach(); the ratio is 1 and the gradient the same).
        rows = rl_cfg.rollout.per_device_generation_batch_size * rl_cfg.rollout.num_samples_per_prompt
        self.on_policy_once = (ref is None and critic is None and rl_cfg.loss.ppo_epochs == 1
                               and rl_cfg.rollout.generation_batches == 1
                               and rows <= rl_cfg.loss.per_device_training_batch_size
                               and not rl_cfg.loss.rollout_is)       # TIS weighs against the training forward
        self.moments: Optional[RunningMoments] = RunningMoments() if reward_cfg.normalize_reward else None
        self.spread: Optional[torch.Tensor] = None   # the last batch's spread of scores among a prompt's answers

    def describe(self) -> str:
        c = self.c
        kl = "in the reward" if self.kl_in_reward else "k3 loss" if self.ref is not None else "off"
        return (f"rollouts: {c.rollout.generation_batches} batch(es) of "
                f"{c.rollout.per_device_generation_batch_size} prompts x "
                f"{c.rollout.num_samples_per_prompt} answers{' (group baseline)' if c.loss.group_baseline else ''}, "
                f"temperature {c.rollout.temperature:g}; advantages {self.est.name}; KL {kl}"
                f"{'; dynamic filtering' if c.rollout.dynamic_filtering else ''}")

    def state_dict(self) -> dict:
        m = self.moments
        return {"reward_moments": [m.mean, m.var, m.count]} if m is not None else {}

    def load_state_dict(self, st: dict) -> None:
        if "reward_moments" in st and self.moments is not None:
            self.moments.mean, self.moments.var, self.moments.count = st["reward_moments"]

    def answer(self, batch: dict, settings: GenerationSettings, **reward_kw):
        """Generate for ``batch`` and score: (seq, attn, pos, action, raw score, score less the
        missing-EOS penalty, has_eos, the sampling-time log-probs in the action layout [B, L-1] or None).
        The rollout's own metrics (turns, tool calls) are kept in ``self.rollout_metrics``."""
        self.resident.use()                          # generation: the actor alone
        batch, g = self.rollout(batch, settings)
        pos = position_ids_from(g.attention_mask)
        self.resident.use("reward")
        raw = self.reward_fn(g.sequences, g.attention_mask, pos, g.end_index, batch, **reward_kw).float()
        if "env_reward" in batch:                    # an environment's own reward adds to the sources'
            raw = raw + batch["env_reward"].to(raw)
        if reward_kw.get("rollout", True):
            self.rollout_metrics = g.metrics
        return (g.sequences, g.attention_mask, pos, g.action_mask, raw,
                raw - self.r.missing_eos_penalty * (~g.has_eos).float(), g.has_eos, g.logprobs)

    def normalise(self, score: torch.Tensor) -> torch.Tensor:
        if self.moments is None:
            return score
        if bool(torch.isfinite(score).all()):     # a non-finite batch is skipped, not averaged in
            self.moments.update(score)
        return (score - self.moments.mean) / self.moments.std

    @torch.no_grad()
    def make(self, batch: dict) -> tuple[Optional[Experience], dict]:
        c, n = self.c, self.c.rollout.num_samples_per_prompt
        t0 = time.time()
        seq, attn, pos, action, raw, score, has_eos, rollout_logp = self.answer(repeat_batch(batch, n), self.settings)
        if c.rollout.overlong_buffer_len:        # DAPO's soft length penalty over the last buffer tokens of the limit
            score = score + overlong_penalty(action.sum(1), self.settings.max_new_tokens, c.rollout.overlong_buffer_len,
                                             c.rollout.overlong_penalty_factor)
        self.spread = prompt_spread(score, n) if n > 1 else None    # [P] for the prompt curriculum
        baseline = self.answer(batch, self.greedy, rollout=False)[5] if self.est.greedy_baseline else None
        gen_s = time.time() - t0
        t1 = time.time()
        self.he.eval()
        start = first_action(action)
        old_logp = ref_logp = None
        if not self.on_policy_once:
            old_logp = causal_logprobs(self.he.engine, seq, attn, pos, c.rollout.temperature, start, self.share)
            self.resident.use("ref")
            ref_logp = (causal_logprobs(self.ref, seq, attn, pos, c.rollout.temperature, start, self.share)
                        if self.ref is not None else old_logp.clone())
        values = None
        if self.critic is not None:
            self.resident.use("critic")
            self.critic.eval()
            values = self.critic(seq, attn, pos)[:, :-1].float()
        score = self.normalise(score)
        if c.loss.group_baseline:
            score = group_advantages(score, n, "mean", std_normalize=False)
        zeros = torch.zeros_like(action)
        rewards, kl = shape_rewards(
            score,
            zeros if old_logp is None else old_logp,
            zeros if ref_logp is None else ref_logp,
            action,
            self.kl.value if self.kl_in_reward else 0.0,
            self.r.reward_clip,
            c.kl.kl_estimator,
        )
        adv, ret = self.est.fn(rewards, action, values=values, group=n, baseline=baseline, gamma=c.loss.gamma,
                               lam=c.loss.lam,
                               std_normalize=self.std_normalize)
        if self.est.critic and c.loss.whiten_advantages:
            adv = masked_whiten(adv, action)
        keep = torch.ones_like(raw, dtype=torch.bool)
        if c.rollout.dynamic_filtering or self.est.dynamic_sampling or self.loss.pairs:   # a tied pair: no preference
            silent = silent_groups(sequence_scores(rewards, action), adv.abs().amax(1), n, self.est.greedy_baseline)
            keep = ~silent.repeat_interleave(n)
        metrics = {
            "reward": raw.mean().item(), "score_used": score.mean().item(),
            "response_length": action.sum(1).mean().item(), "eos_rate": has_eos.float().mean().item(),
            "advantage_abs": masked_mean(adv.abs(), action).item(), "kept_answers": int(keep.sum()),
            "generation_s": gen_s, "experience_s": time.time() - t1,
            "generation_tokens_per_s": float(action.sum()) / gen_s if gen_s > 0 else 0.0,
        }
        if n > 1:
            metrics["reward_std_in_group"] = raw.view(-1, n).std(1).mean().item()
            metrics["uniform_groups"] = int(uniform_groups(sequence_scores(rewards, action), n).sum())
        if self.ref is not None:     # without a reference model (kl_coef 0) there is no KL to report
            metrics.update(kl=kl.sum(1).mean().item(), kl_per_token=masked_mean(kl, action).item(),
                           # k3 (never negative, unlike a k1 mean over a few samples): the report's KL figure
                           kl_k3=(kl_estimate(old_logp, ref_logp, "k3") * action).sum(1).mean().item())
        if values is not None:
            metrics.update(values=masked_mean(values, action).item(), returns=masked_mean(ret, action).item())
        if old_logp is not None:     # sampling-time log-probs against the training forward's, same weights
            metrics.update(logprob_gap(rollout_logp, old_logp, action))
        is_weight = None
        if c.loss.rollout_is:        # the policy loss weighs each token by min(p_train / p_rollout, cap)
            is_weight, cut = truncated_is_weight(old_logp, rollout_logp, action, c.loss.rollout_is_cap)
            metrics.update(is_weight_mean=masked_mean(is_weight, action).item(),
                           is_weight_cut_frac=masked_mean(cut.float(), action).item())
        if baseline is not None:
            metrics["greedy_baseline"] = baseline.mean().item()
        metrics.update(self.rollout_metrics)
        exp = Experience(seq, attn, pos, action, old_logp, ref_logp, adv, raw, values,
                         ret if values is not None else None, rollout_logp if old_logp is None else None, is_weight)
        return (exp.select(keep) if bool(keep.any()) else None), metrics
