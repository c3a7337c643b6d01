"""Critic-free policy optimisation on the Hybrid Engine: every estimator of ``advantages.py``
without a critic (GRPO, Dr. GRPO, RLOO, ReMax, REINFORCE++, and online DPO, whose pairs of answers
ranked by the reward train through the DPO loss instead of the clipped surrogate).

Each prompt is answered ``num_samples_per_prompt`` times; the answers' per-token rewards (score on
the last token, minus kl_coef x KL per token when the KL is in the reward) go through the
algorithm's estimator. Otherwise the KL to the reference is a k3 loss term.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable

import torch

from ..hybrid_engine import GenerationSettings
from .experience import action_logprobs, answer_layout, causal_logprobs, first_action, micro_batches, position_ids_from
from .ppo_trainer import finite_or_skip
from .advantages import ESTIMATORS, sequence_scores
from .maths import (aggregate, dpo_loss, entropy_from_logits, kl_estimate, masked_mean, policy_loss, shape_rewards,
                    silent_groups, uniform_groups)


@dataclass
class GroupBatch:
    sequences: torch.Tensor       # [N, L]
    attention_mask: torch.Tensor  # [N, L]
    position_ids: torch.Tensor    # [N, L]
    action_mask: torch.Tensor     # [N, L-1]
    old_logp: torch.Tensor        # [N, L-1]
    ref_logp: torch.Tensor        # [N, L-1]
    advantages: torch.Tensor      # [N, L-1] (the answer's advantage on each of its tokens)

    def select(self, keep: torch.Tensor) -> "GroupBatch":
        return GroupBatch(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})



def repeat_batch(batch: dict, n: int) -> dict:
    """Each prompt ``n`` times in a row (the group layout ``group_advantages`` expects)."""
    out = {k: v.repeat_interleave(n, 0) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "prompt_text" in batch:
        out["prompt_text"] = [p for p in batch["prompt_text"] for _ in range(n)]
    return out


def pairs_in_order(b: GroupBatch, size: int) -> list[GroupBatch]:
    """Micro-batches of whole answer pairs (rows 2i, 2i+1 stay together), ``size`` rows or one pair at least."""
    step = max(2, size - size % 2)
    return [b.select(torch.arange(i, min(i + step, b.sequences.shape[0]))) for i in range(0, b.sequences.shape[0], step)]


class GroupTrainer:
    def __init__(self, hybrid, ref, reward_fn: Callable[..., torch.Tensor], tokenizer, ppo_cfg,
                 max_new_tokens: int, dpo_beta: float = 0.1):
        self.he, self.ref, self.reward_fn, self.tok, self.c = hybrid, ref, reward_fn, tokenizer, ppo_cfg
        self.max_new_tokens, self.dpo_beta = max_new_tokens, dpo_beta
        self.est = ESTIMATORS[ppo_cfg.algo]
        self.kl_in_reward = ppo_cfg.kl_in_reward or self.est.kl_in_reward   # else a k3 loss term
        self.sample = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True,
                                         temperature=ppo_cfg.temperature, top_p=ppo_cfg.top_p,
                                         top_k=ppo_cfg.top_k, static_cache=ppo_cfg.static_cache)
        self.greedy = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False,
                                         static_cache=ppo_cfg.static_cache)
        dr = ppo_cfg.dr_grpo or ppo_cfg.algo == "dr_grpo"
        self.std_normalize = ppo_cfg.std_normalize and not dr
        self.loss_agg = "constant" if dr else ppo_cfg.loss_agg
        self.guard = None      # a loop.NonFinite, set by the stage

    def state_dict(self) -> dict:
        return {}          # no controller or running statistics: the engines hold everything

    def load_state_dict(self, st: dict, ckpt_dir=None) -> None:
        pass

    def score(self, batch: dict, settings: GenerationSettings):
        """Generate for ``batch`` and score: (seq, attn, pos, action, rewards, has_eos)."""
        seq = self.he.generate(batch["input_ids"], batch["attention_mask"], settings)
        attn, action, end, has_eos = answer_layout(seq, batch["attention_mask"], self.tok.eos_token_id)
        pos = position_ids_from(attn)
        r = self.reward_fn(seq, attn, pos, end, batch, rollout=settings is self.sample).float()
        r = r - self.c.missing_eos_penalty * (~has_eos).float()
        return seq, attn, pos, action, r, has_eos

    @torch.no_grad()
    def rollout(self, batch: dict) -> tuple[GroupBatch | None, dict]:
        c, n = self.c, self.c.num_samples_per_prompt
        t0 = time.time()
        big = repeat_batch(batch, n)
        seq, attn, pos, action, raw, has_eos = self.score(big, self.sample)
        baseline = None
        if self.est.greedy_baseline:
            baseline = self.score(batch, self.greedy)[4]
        gen_s = time.time() - t0
        t1 = time.time()
        self.he.eval()
        start = first_action(action)
        old_logp = causal_logprobs(self.he.engine, seq, attn, pos, c.temperature, start)
        ref_logp = (causal_logprobs(self.ref, seq, attn, pos, c.temperature, start) if self.ref is not None
                    else old_logp.clone())
        kl = kl_estimate(old_logp, ref_logp, c.kl_estimator) * action
        kl_in_reward = self.kl_in_reward and self.ref is not None
        rewards, _ = shape_rewards(raw, old_logp, ref_logp, action, c.kl_coef if kl_in_reward else 0.0, 0.0,
                                   c.kl_estimator)
        adv, _ = self.est.fn(rewards, action, group=n, baseline=baseline, gamma=c.gamma,
                        std_normalize=self.std_normalize)
        score = sequence_scores(rewards, action)
        per_answer = adv.abs().amax(1)          # |advantage| of each answer (the same on all its tokens)
        same = uniform_groups(score, n) if n > 1 else torch.zeros(score.numel(), dtype=torch.bool)
        keep = torch.ones_like(score, dtype=torch.bool)
        if c.dynamic_filtering or self.est.loss == "dpo":     # a tied pair states no preference
            keep = ~silent_groups(score, per_answer, n, c.algo).repeat_interleave(n).to(score.device)
        metrics = {
            "reward": raw.mean().item(), "reward_std_in_group": raw.view(-1, n).std(1).mean().item() if n > 1 else 0.0,
            "response_length": action.sum(1).mean().item(), "eos_rate": has_eos.float().mean().item(),
            "uniform_groups": int(same.sum()), "kept_answers": int(keep.sum()),
            "advantage_abs": masked_mean(adv.abs(), action).item(), "generation_s": gen_s, "experience_s": time.time() - t1,
            "generation_tokens_per_s": float(action.sum()) / gen_s if gen_s > 0 else 0.0,
        }
        if self.ref is not None:     # without a reference model (kl_coef 0) there is no KL to report
            metrics.update(kl=kl.sum(1).mean().item(), kl_per_token=masked_mean(kl, action).item())
        if baseline is not None:
            metrics["greedy_baseline"] = baseline.mean().item()
        if not bool(keep.any()):
            return None, metrics
        gb = GroupBatch(seq, attn, pos, action, old_logp, ref_logp, adv)
        return gb.select(keep), metrics

    def actor_step(self, b: GroupBatch) -> dict:
        c, engine = self.c, self.he.engine
        logits, logp, start = action_logprobs(engine, b.sequences, b.attention_mask, b.position_ids, b.action_mask,
                                              c.temperature)
        loss, clipfrac = policy_loss(logp, b.old_logp, b.advantages, b.action_mask, c.cliprange,
                                     c.eps_clip_high, self.loss_agg, self.max_new_tokens)
        out = {"pg_loss": loss.item(), "clip_frac": clipfrac.item()}
        if c.kl_coef > 0 and not self.kl_in_reward and self.ref is not None:
            kl_term = aggregate(kl_estimate(logp, b.ref_logp, "k3"), b.action_mask, self.loss_agg, self.max_new_tokens)
            loss = loss + c.kl_coef * kl_term
            out["kl_loss"] = kl_term.item()
        if not finite_or_skip(loss, self.guard, "policy loss"):
            return {}
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            out["entropy"] = masked_mean(entropy_from_logits(logits.detach()), b.action_mask[:, start:]).item()
            out["approx_kl"] = masked_mean(b.old_logp - logp.detach(), b.action_mask).item()
        out["actor_loss"] = loss.item()
        return out

    def dpo_step(self, b: GroupBatch) -> dict:
        """Online DPO on consecutive answer pairs: the one with the positive preference sign is chosen;
        sequence log-probs of the policy against the reference's from the rollout (both at the rollout
        temperature)."""
        engine = self.he.engine
        _, logp, _ = action_logprobs(engine, b.sequences, b.attention_mask, b.position_ids, b.action_mask,
                                     self.c.temperature)
        pol = (logp * b.action_mask).sum(1).view(-1, 2)
        ref = (b.ref_logp * b.action_mask).sum(1).view(-1, 2)
        first = (b.advantages.sum(1).view(-1, 2)[:, 0] > 0)
        pick = lambda x, i: torch.where(first, x[:, i], x[:, 1 - i])
        loss, chosen, rejected = dpo_loss(pick(pol, 0), pick(pol, 1), pick(ref, 0), pick(ref, 1), self.dpo_beta)
        if not finite_or_skip(loss, self.guard, "online DPO loss"):
            return {}
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            approx_kl = masked_mean(b.old_logp - logp.detach(), b.action_mask).item()
        return {"dpo_loss": loss.item(), "reward_margin": (chosen - rejected).mean().item(), "approx_kl": approx_kl,
                "actor_loss": loss.item()}

    def train(self, batches: list[GroupBatch], micro_batch: int) -> dict:
        t0 = time.time()
        self.he.train()
        acc: dict = {}
        dpo = self.est.loss == "dpo"
        for _ in range(self.c.ppo_epochs):
            for b in batches:
                parts = pairs_in_order(b, micro_batch) if dpo else micro_batches(b, micro_batch)
                for mb in parts:
                    for k, v in (self.dpo_step(mb) if dpo else self.actor_step(mb)).items():
                        acc.setdefault(k, []).append(v)
        out = {k: sum(v) / len(v) for k, v in acc.items()}
        out["train_s"] = time.time() - t0
        return out
