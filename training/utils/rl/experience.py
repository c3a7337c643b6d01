"""The experience maker: rollouts through the Hybrid Engine, then log-probs, values and rewards.

Layout: a sequence is [left-padded prompt | answer, right-padded]; positions are taken from the
attention mask so left padding does not shift them.  Per-token arrays have length L-1 and are
indexed by *state* s: the action is token s+1, its log-prob comes from the logits at s and its
value is the critic's value at s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Optional

import torch

from ..hybrid_engine import GenerationSettings
from .advantages import ESTIMATORS
from .maths import RunningMoments, group_advantages, masked_mean, masked_whiten, shape_rewards, token_logprobs


@dataclass
class Experience:
    sequences: torch.Tensor        # [B, L]
    attention_mask: torch.Tensor   # [B, L]
    position_ids: torch.Tensor     # [B, L]
    action_mask: torch.Tensor      # [B, L-1] float
    old_logp: torch.Tensor         # [B, L-1]
    ref_logp: torch.Tensor         # [B, L-1]
    values: torch.Tensor           # [B, L-1]
    rewards: torch.Tensor          # [B, L-1]
    advantages: torch.Tensor       # [B, L-1]
    returns: torch.Tensor          # [B, L-1]
    score: torch.Tensor            # [B] (after clipping/normalisation inputs: the raw score)


def micro_batches(batch, size: int) -> list:
    """A rollout batch (``Experience`` or ``GroupBatch``) as micro-batches of ``size`` rows of similar
    length (sorted by real tokens), each cut to the columns that hold a real token in one of its rows.

    Sequences are [left padding | prompt | answer | right padding], so the columns dropped are
    padding at both ends; per-token arrays (indexed by state, one column shorter) are cut to match.
    Positions were taken from the full mask, so they are unchanged for every real token.
    """
    order = torch.argsort(batch.attention_mask.sum(1), stable=True)
    width = batch.sequences.shape[1]
    out = []
    for i in range(0, len(order), size):
        idx = order[i:i + size]
        cols = batch.attention_mask[idx].any(0).nonzero()
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        part = {}
        for f in fields(batch):
            t = getattr(batch, f.name)[idx]
            if t.dim() == 2:
                t = t[:, lo:hi] if t.shape[1] == width else t[:, lo:hi - 1]
            part[f.name] = t
        out.append(type(batch)(**part))
    return out


def answer_layout(seq: torch.Tensor, prompt_mask: torch.Tensor, eos_id: int):
    """Masks for generated sequences: the answer runs up to and including its first EOS.

    Returns (attention_mask [B, L], action_mask [B, L-1], end_index [B], has_eos [B]).
    """
    p = prompt_mask.shape[1]
    resp = seq[:, p:]
    is_eos = resp == eos_id
    after = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0
    resp_mask = (~after).long()
    attn = torch.cat([prompt_mask.long(), resp_mask], dim=1)
    action = torch.zeros(seq.shape[0], seq.shape[1] - 1, dtype=torch.float32, device=seq.device)
    action[:, p - 1:] = resp_mask.float()
    length = resp_mask.sum(1)
    end = p + length - 1
    return attn, action, end, is_eos.any(1)


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def first_action(action_mask: torch.Tensor) -> int:
    """The first state that takes an action in the batch (prompt width - 1 with left-padded prompts)."""
    cols = action_mask.any(0).nonzero()
    return int(cols[0]) if len(cols) else action_mask.shape[1]


def action_logits(model, seq, attn, pos, start: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """Logits / T at the states start..L-2, the ones whose next token can be an action: [B, L-1-start, V].

    The LM head and everything after it run on those positions only (``logits_to_keep``): with
    ~50-token prompts and short answers that is most of the vocabulary-sized work saved.
    """
    logits = model(input_ids=seq, attention_mask=attn, position_ids=pos, use_cache=False,
                   logits_to_keep=seq.shape[1] - start).logits
    return logits[:, :-1, :] / temperature


def widen(x: torch.Tensor, start: int) -> torch.Tensor:
    """[B, L-1-start] per-state values -> [B, L-1], zeros before ``start`` (prompt states)."""
    return torch.nn.functional.pad(x, (start, 0))


def action_logprobs(model, seq, attn, pos, action_mask, temperature: float = 1.0):
    """(logits / T at the action states [B, L-1-start, V], log-probs of seq[:, 1:] [B, L-1] (0 before
    ``start``), ``start``) for the actions that ``action_mask`` marks: the policy's forward in training."""
    start = first_action(action_mask)
    logits = action_logits(model, seq, attn, pos, start, temperature)
    return logits, widen(token_logprobs(logits, seq[:, start + 1:]), start), start


def causal_logprobs(model, seq, attn, pos, temperature: float = 1.0, start: int = 0) -> torch.Tensor:
    """Log-probs of seq[:, 1:] under ``model`` at the sampling temperature (logits / T), [B, L-1];
    computed for states >= ``start`` only (0 before it)."""
    logits = action_logits(model, seq, attn, pos, start, temperature)
    return widen(token_logprobs(logits, seq[:, start + 1:]), start)


class ExperienceMaker:
    """Turns a prompt batch into an Experience (one rollout batch)."""

    def __init__(self, hybrid, ref, critic, reward_fn: Callable, tokenizer, ppo_cfg, max_new_tokens: int,
                 kl_coef_fn: Callable[[], float]):
        self.he, self.ref, self.critic, self.reward_fn = hybrid, ref, critic, reward_fn
        self.tok, self.c, self.kl_coef = tokenizer, ppo_cfg, kl_coef_fn
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True,
                                           temperature=ppo_cfg.temperature, top_p=ppo_cfg.top_p,
                                           top_k=ppo_cfg.top_k, static_cache=ppo_cfg.static_cache)
        self.moments: Optional[RunningMoments] = RunningMoments() if ppo_cfg.normalize_reward else None

    def state_dict(self) -> dict:
        m = self.moments
        return {"reward_moments": [m.mean, m.var, m.count]} if m is not None else {}

    def load_state_dict(self, st: dict) -> None:
        if "reward_moments" in st and self.moments is not None:
            self.moments.mean, self.moments.var, self.moments.count = st["reward_moments"]

    @torch.no_grad()
    def make(self, batch: dict) -> tuple[Experience, dict]:
        c = self.c
        t0 = time.time()
        seq = self.he.generate(batch["input_ids"], batch["attention_mask"], self.settings)
        gen_s = time.time() - t0
        attn, action, end, has_eos = answer_layout(seq, batch["attention_mask"], self.tok.eos_token_id)
        pos = position_ids_from(attn)
        t1 = time.time()
        self.he.eval()
        start = first_action(action)
        old_logp = causal_logprobs(self.he.engine, seq, attn, pos, c.temperature, start)
        ref_logp = causal_logprobs(self.ref, seq, attn, pos, c.temperature, start)
        self.critic.eval()
        values = self.critic(seq, attn, pos)[:, :-1].float()
        raw = self.reward_fn(seq, attn, pos, end, batch).float()
        score = raw - c.missing_eos_penalty * (~has_eos).float()
        if self.moments is not None:
            if bool(torch.isfinite(score).all()):     # a non-finite batch is skipped, not averaged in
                self.moments.update(score)
            score = (score - self.moments.mean) / self.moments.std
        if c.group_baseline:
            score = group_advantages(score, c.num_samples_per_prompt, "grpo", std_normalize=False)
        rewards, kl = shape_rewards(score, old_logp, ref_logp, action, self.kl_coef(), c.reward_clip, c.kl_estimator)
        adv, ret = ESTIMATORS["gae"].fn(rewards, action, values=values, gamma=c.gamma, lam=c.lam)
        if c.whiten_advantages:
            adv = masked_whiten(adv, action)
        exp_s = time.time() - t1
        gen_tokens = int(action.sum().item())
        metrics = {
            "reward": raw.mean().item(), "score_used": score.mean().item(),
            "kl": (kl.sum(1)).mean().item(), "kl_per_token": masked_mean(kl, action).item(),
            "response_length": action.sum(1).mean().item(), "eos_rate": has_eos.float().mean().item(),
            "values": masked_mean(values, action).item(), "returns": masked_mean(ret, action).item(),
            "generation_s": gen_s, "experience_s": exp_s,
            "generation_tokens_per_s": gen_tokens / gen_s if gen_s > 0 else 0.0,
        }
        exp = Experience(seq, attn, pos, action, old_logp, ref_logp, values, rewards, adv, ret, raw)
        return exp, metrics
