"""Rollout sequences: masks, positions, log-probs of the answer tokens, and micro-batches.

Layout: a sequence is [left-padded prompt | answer, right-padded]; positions are taken from the
attention mask so left padding does not shift them.  Per-token arrays have length L-1 and are
indexed by *state* s: the action is token s+1, its log-prob comes from the logits at s and its
value is the critic's value at s.
"""
from __future__ import annotations

from dataclasses import fields

import torch

from ..shared_prefix import state_logprobs


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


def first_action(action_mask: torch.Tensor) -> int:
    """The first state that takes an action in the batch (prompt width - 1 with left-padded prompts)."""
    cols = action_mask.any(0).nonzero()
    return int(cols[0]) if len(cols) else action_mask.shape[1]


def widen(x: torch.Tensor, start: int) -> torch.Tensor:
    """[B, L-1-start] per-state values -> [B, L-1], zeros before ``start`` (prompt states)."""
    return torch.nn.functional.pad(x, (start, 0))


def action_logprobs(model, seq, attn, pos, action_mask, temperature: float = 1.0, share: bool = False):
    """(log-probs of seq[:, 1:] at temperature T [B, L-1] (0 before ``start``), entropy at the states
    start.. [B, L-1-start] (no gradient), ``start``) for the actions ``action_mask`` marks: the policy's
    forward in training. The LM head runs on the action states only; with ``share`` rows that share
    their prompt run it once (``shared_prefix.py``)."""
    start = first_action(action_mask)
    lp, ent = state_logprobs(model, seq, attn, pos, start, temperature, share, entropy=True)
    return widen(lp, start), ent, start


def causal_logprobs(
    model, seq, attn, pos, temperature: float = 1.0, start: int = 0, share: bool = False
) -> torch.Tensor:
    """Log-probs of seq[:, 1:] under ``model`` at the sampling temperature (logits / T), [B, L-1];
    computed for states >= ``start`` only (0 before it)."""
    return widen(state_logprobs(model, seq, attn, pos, start, temperature, share)[0], start)


def repeat_batch(batch: dict, n: int) -> dict:
    """Each prompt ``n`` times in a row (the group layout the group estimators expect)."""
    out = {k: v.repeat_interleave(n, 0) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for key in ("prompt_text", "columns", "messages"):
        if key in batch:
            out[key] = [p for p in batch[key] for _ in range(n)]
    return out


def select_rows(batch, idx: torch.Tensor, cols: tuple[int, int] | None = None):
    """The rows ``idx`` of a dataclass of tensors (fields that are None stay None); with ``cols`` =
    (lo, hi), 2-D fields are cut to those sequence columns (per-state fields to lo..hi-1)."""
    width = batch.sequences.shape[1]
    part = {}
    for f in fields(batch):
        t = getattr(batch, f.name)
        if t is not None:
            t = t[idx]
            if cols is not None and t.dim() == 2:
                lo, hi = cols
                t = t[:, lo:hi] if t.shape[1] == width else t[:, lo:hi - 1]
        part[f.name] = t
    return type(batch)(**part)


def micro_batches(batch, size: int, group: int = 1) -> list:
    """A rollout batch as micro-batches of ``size`` rows of similar length (sorted by real tokens),
    each cut to the columns that hold a real token in one of its rows.

    With ``group`` > 1 (a divisor of ``size`` and of the row count) the blocks of ``group``
    consecutive rows (a prompt's answers) stay together, sorted by their longest row, so a
    micro-batch holds whole groups whose shared prompt runs once.

    Sequences are [left padding | prompt | answer | right padding], so the columns dropped are
    padding at both ends; per-token arrays (indexed by state, one column shorter) are cut to match.
    Positions were taken from the full mask, so they are unchanged for every real token.
    """
    real = batch.attention_mask.sum(1)
    if group > 1 and size % group == 0 and len(real) % group == 0:
        blocks = torch.argsort(real.view(-1, group).amax(1), stable=True)
        order = (blocks[:, None] * group + torch.arange(group, device=real.device)).flatten()
    else:
        order = torch.argsort(real, stable=True)
    out = []
    for i in range(0, len(order), size):
        idx = order[i:i + size]
        cols = batch.attention_mask[idx].any(0).nonzero()
        out.append(select_rows(batch, idx, (int(cols[0]), int(cols[-1]) + 1)))
    return out


def pairs_in_order(batch, size: int) -> list:
    """Micro-batches of whole answer pairs (rows 2i, 2i+1 stay together), ``size`` rows or one pair at least."""
    step, n = max(2, size - size % 2), batch.sequences.shape[0]
    return [select_rows(batch, torch.arange(i, min(i + step, n))) for i in range(0, n, step)]
