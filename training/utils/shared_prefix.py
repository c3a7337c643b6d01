"""A prompt shared by several rows runs once: GRPO's group of answers, DPO's chosen and rejected.

Rows are laid out [left-padded prompt | answer, right-padded] (``rl/sequences.py``). The columns
before ``start`` (the prompt but its last token) are the same in every row of a group, so their
keys and values are too: the prompt runs once per distinct prompt with the KV cache on, the cache
is copied to each row (in training the gradient flows back through the copies into the one prompt
forward), and only the columns from ``start`` on run per row. Those answer columns run in a few
buckets of rows of similar length, each cut to its longest answer, instead of one batch padded
to the longest answer of all (one 48-token answer among 13-token ones would otherwise make every
row pay 48). With ~50-token prompts and ~15-token answers a group of 4 then runs about a third
of the tokens the plain forward runs. Log-probs equal the plain forward's up to float rounding
(``tests/unit/test_shared_prefix.py``).

It falls back to the plain forward when no two rows share a prompt, when ``start`` is 0, with
gradient checkpointing (transformers drops the cache inside checkpointed layers), and for a ZeRO-3
engine on several ranks (its weight gathers need the same forward calls on every rank).
"""
from __future__ import annotations

from typing import Optional

import torch

from .losses import entropy_from_logits, token_logprobs
from .model.reward import activation_checkpointing

CALL_COST = 48      # a forward call's fixed cost, in answer tokens, when choosing the buckets


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the attended tokens only, so left padding does not shift them [B, L]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefix_groups(seq: torch.Tensor, attn: torch.Tensor, start: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(first row of each distinct prefix [U], prefix of each row [B]) for the columns before
    ``start``; None when every row's prefix is its own (nothing to share)."""
    if start <= 0:
        return None
    key = seq[:, :start].masked_fill(attn[:, :start] == 0, -1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    if uniq.shape[0] == seq.shape[0]:
        return None
    rows = torch.arange(seq.shape[0], device=seq.device)
    first = torch.full((uniq.shape[0],), seq.shape[0], dtype=torch.long, device=seq.device)
    first = first.scatter_reduce(0, inverse, rows, "amin")
    return first, inverse


def prompt_answer_layout(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The pair batch (right-padded [prompt answer pad]) as [left-padded prompt | answer | pad]:
    (ids, attention mask, positions, prompt width P). A pair's chosen and rejected rows then hold the
    same columns before P - 1, which ``state_logprobs`` and ``state_values`` run once."""
    ids, mask, plen, end = batch["input_ids"], batch["attention_mask"], batch["prompt_len"], batch["end_index"]
    p, a = int(plen.max()), int((end + 1 - plen).max())
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None]
    cols = torch.arange(p + a, device=ids.device)[None, :]
    src = cols - (p - plen[:, None])                      # column of the right-padded batch each cell comes from
    real = (src >= 0) & (src <= end[:, None])
    out = torch.where(real, ids[rows, src.clamp(0, ids.shape[1] - 1)], 0)       # 0 under the mask: any id
    attn = (real & (mask[rows, src.clamp(0, ids.shape[1] - 1)] > 0)).long()
    return out, attn, position_ids_from(attn), p


def answer_end_scores(model, batch: dict, share: bool = True) -> torch.Tensor:
    """A ``ValueModel``'s value at each row's last real token (a reward model's score) [B], from a
    right-padded [prompt answer pad] batch (input_ids, attention_mask, prompt_len, end_index). With
    ``share`` rows with the same prompt run it once and their answers continue from its KV cache."""
    seq, attn, pos, p = prompt_answer_layout(batch)
    values = state_values(model, seq, attn, pos, p, share)           # columns p.. = the answers
    return values.gather(1, (batch["end_index"] - batch["prompt_len"]).unsqueeze(1)).squeeze(1)


@torch.no_grad()
def score_rows(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16,
               share: bool = True) -> list[float]:
    """A ``ValueModel``'s end score of each (prompt ids, answer ids ending in EOS) row, in order, in
    right-padded batches of ``batch_size`` (``answer_end_scores``: rows of a batch that share their
    prompt run it once, so callers that want that order their rows by prompt)."""
    from .data.collate import pad_sequences

    dev = next(model.parameters()).device
    out: list[float] = []
    for k in range(0, len(rows), batch_size):
        chunk = rows[k:k + batch_size]
        seqs = [p + a for p, a in chunk]
        ids, mask = pad_sequences(seqs, pad_id, left=False)
        batch = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev),
                 "prompt_len": torch.tensor([len(p) for p, _ in chunk], device=dev),
                 "end_index": torch.tensor([len(s) - 1 for s in seqs], device=dev)}
        out += answer_end_scores(model, batch, share).float().cpu().tolist()
    return out


def _gathers_across_ranks(model) -> bool:
    """A ZeRO-3 engine on several ranks gathers the weights with collectives in every forward call,
    so every rank must make the same calls; the length buckets follow a rank's own rows and may
    not, so such a model runs the plain (one-call) forward."""
    stage = getattr(model, "zero_optimization_stage", None)
    if not callable(stage) or stage() != 3:
        return False
    from .distributed import world_size

    return world_size() > 1


def _shareable(model, seq: torch.Tensor, attn: torch.Tensor, start: int, share: bool):
    if not share or activation_checkpointing(model) or _gathers_across_ranks(model):
        return None
    return prefix_groups(seq, attn, start)


def prefix_cache(model, seq: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, start: int,
                 groups: tuple[torch.Tensor, torch.Tensor], per_row: bool = True, lm: bool = True):
    """The KV cache of columns [0, start), computed once per distinct prefix (one cache row each) and,
    with ``per_row``, copied to every row.  ``lm``: a causal LM (else a ``ValueModel``, whose
    forward with the cache on returns (values, cache))."""
    first, inverse = groups
    ids, mask, p = seq[first, :start], attn[first, :start], pos[first, :start]
    if lm:
        cache = model(
            input_ids=ids, attention_mask=mask, position_ids=p, use_cache=True, logits_to_keep=1
        ).past_key_values
    else:
        cache = model(input_ids=ids, attention_mask=mask, position_ids=p, use_cache=True)[1]
    if per_row:
        cache.batch_select_indices(inverse)
    return cache


def buckets(lengths: list[int], call_cost: int = CALL_COST) -> list[list[int]]:
    """Row indices in buckets of similar length, minimising sum over buckets of (rows x longest) +
    ``call_cost`` per bucket (the padded answer tokens computed plus each call's overhead)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ln = [lengths[i] for i in order]
    best, cut = [0.0] + [float("inf")] * len(ln), [0] * (len(ln) + 1)
    for j in range(1, len(ln) + 1):              # rows order[i:j] as one bucket after the best split of order[:i]
        for i in range(j):
            c = best[i] + (j - i) * ln[j - 1] + call_cost
            if c < best[j]:
                best[j], cut[j] = c, i
    out, j = [], len(ln)
    while j > 0:
        out.append(order[cut[j]:j])
        j = cut[j]
    return out[::-1]


def _scored(logits: torch.Tensor, labels: torch.Tensor, temperature: float, entropy: bool):
    logits = logits / temperature
    ent = None
    if entropy:
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach())
    return token_logprobs(logits, labels), ent


def _answer_columns(model, seq: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, start: int,
                    groups: tuple[torch.Tensor, torch.Tensor], real: list[int], width: int, score, lm: bool,
                    call_cost: int) -> list[Optional[torch.Tensor]]:
    """Runs columns start.. of every row from its prompt's cache, in length buckets of ``real[b]``
    columns; ``score(model output, rows, w)`` gives a tuple of [rows, w] tensors (or None), each
    returned as [B, width] in the original row order, 0 past a row's ``real`` columns."""
    cache = prefix_cache(model, seq, attn, pos, start, groups, per_row=False, lm=lm)
    inverse = groups[1]
    parts, rows = [], []
    for idx in buckets(real, call_cost):
        w = max(real[i] for i in idx)
        sel = torch.tensor(idx, device=seq.device)
        sub = type(cache)()
        for li, layer in enumerate(cache.layers):
            sub.update(layer.keys[inverse[sel]], layer.values[inverse[sel]], li)
        out = model(input_ids=seq[sel, start:start + w], attention_mask=attn[sel, :start + w],
                    position_ids=pos[sel, start:start + w], past_key_values=sub, use_cache=True)
        parts.append(score(out, sel, w))
        rows += idx
    back = torch.argsort(torch.tensor(rows, device=seq.device))
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))
    return [None if parts[0][k] is None else torch.cat([pad(p[k]) for p in parts])[back] for k in range(len(parts[0]))]


def state_logprobs(model, seq: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, start: int,
                   temperature: float = 1.0, share: bool = True, entropy: bool = False, call_cost: int = CALL_COST):
    """Log-probs of the tokens start+1..L-1 under ``model`` at temperature T (logits / T), taken at
    the states start..L-2: [B, L-1-start]; with ``entropy`` also the entropy there (no gradient),
    else None.

    The LM head runs on those states only; with ``share`` rows with the same columns before
    ``start`` compute them once, and the answer columns run in length buckets (0 past a row's
    last real token)."""
    labels = seq[:, start + 1:]
    groups = _shareable(model, seq, attn, start, share)
    if groups is None:
        logits = model(input_ids=seq, attention_mask=attn, position_ids=pos, use_cache=False,
                       logits_to_keep=seq.shape[1] - start).logits[:, :-1, :]
        return _scored(logits, labels, temperature, entropy)
    real = attn[:, start + 1:].sum(1).clamp(min=1).tolist()     # answer tokens per row (right-padded)
    score = lambda out, sel, w: _scored(out.logits, labels[sel, :w], temperature, entropy)
    lp, ent = _answer_columns(model, seq, attn, pos, start, groups, real, seq.shape[1] - 1 - start, score, True,
                              call_cost)
    return lp, ent


def state_values(model, seq: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, start: int,
                 share: bool = True, call_cost: int = CALL_COST) -> torch.Tensor:
    """A ``ValueModel``'s values at columns start..L-1: [B, L-start] (0 past a row's last real
    token). With ``share`` rows with the same columns before ``start`` (a reward pair's prompt)
    compute them once and the rest runs in length buckets, as in ``state_logprobs``."""
    groups = _shareable(model, seq, attn, start, share)
    if groups is None:
        return model(seq, attn, pos)[:, start:] * attn[:, start:]
    real = attn[:, start:].sum(1).clamp(min=1).tolist()
    values, = _answer_columns(model, seq, attn, pos, start, groups, real, seq.shape[1] - start,
                              lambda out, sel, w: (out[0],), False, call_cost)
    return values * attn[:, start:]
