"""Greedy answers for evaluation, fast on a CPU: the closing report's thousands of short answers.

Three things ``generate`` on left-padded batches spends time on and this path does not:

1. **The shared prefix runs once.** Every prompt of a chat template starts with the same tokens (the
   system turn and ``<|im_start|>user``: about 20 of SmolLM2's 47); their keys and values are
   computed once and copied to every row, and only each prompt's own tokens run per row.
2. **Finished rows leave the batch.** A row that has written EOS is dropped from the KV cache
   (``DynamicCache.batch_select_indices``), so one 48-token answer does not make the 63 short ones
   beside it pay 48 decode steps.
3. **Rows of similar length share a batch** (prompts sorted by length), so padding is small, and
   batches are large (288 rows by default), since a decode step's cost is mostly fixed on a CPU.

Rows are laid out [prefix | padding | own tokens]; the attention mask hides the padding and
positions count attended tokens only, so each row sees exactly its prompt. The tokens are those of
transformers' greedy ``generate`` on each prompt (``tests/test_greedy.py``; float rounding of a
different batch shape could only move an exact tie).
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import DynamicCache

from training.utils.shared_prefix import position_ids_from


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens every prompt shares, leaving each at least one token of its own."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    k = 0
    while k < n and all(p[k] == first[k] for p in prompts):
        k += 1
    return k


def _expand(cache: DynamicCache, rows: int) -> DynamicCache:
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.expand(rows, -1, -1, -1).contiguous(),
                   layer.values.expand(rows, -1, -1, -1).contiguous(), i)
    return out


@torch.no_grad()
def greedy_token_ids(model, prompts: Sequence[Sequence[int]], eos_token_id: int, max_new_tokens: int,
                     batch_size: int = 64, progress=None) -> list[list[int]]:
    """Each prompt's greedy answer tokens (up to and including EOS, at most ``max_new_tokens``).
    ``progress`` (a tqdm bar or None) is advanced by the prompts of each finished batch."""
    model.eval()
    dev = next(model.parameters()).device
    p = common_prefix(prompts)
    prefix_cache = None
    if p:
        prefix_cache = DynamicCache()
        model(input_ids=torch.tensor([list(prompts[0][:p])], device=dev), past_key_values=prefix_cache, use_cache=True)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        own = [list(prompts[i][p:]) for i in idx]
        width = max(len(o) for o in own)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), p + width, dtype=torch.long)
        mask[:, :p] = 1
        for r, o in enumerate(own):
            ids[r, width - len(o):] = torch.tensor(o)
            mask[r, p + width - len(o):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        cache = _expand(prefix_cache, len(idx)) if prefix_cache is not None else DynamicCache()
        pos = position_ids_from(mask)[:, p:]
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        alive = torch.arange(len(idx), device=dev)          # rows of this batch still writing
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
            for r, t in zip(alive.tolist(), nxt.tolist()):
                out[idx[r]].append(t)
            keep = nxt != eos_token_id
            if step == max_new_tokens - 1 or not bool(keep.any()):
                break
            if not bool(keep.all()):
                sel = keep.nonzero().squeeze(1)
                cache.batch_select_indices(sel)
                alive, nxt, mask = alive[sel], nxt[sel], mask[sel]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            pos = mask.sum(1, keepdim=True) - 1
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                           use_cache=True).logits[:, -1]
        if progress is not None:
            progress.update(len(idx))
    return out
