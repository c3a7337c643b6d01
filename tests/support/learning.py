"""Helpers shared by the learning tests of several kinds."""
from __future__ import annotations

import functools

import torch

TEMPERATURE = 0.12


@functools.lru_cache(maxsize=None)
def _prompt_batch():
    from training.utils.data.bundled import train_eval
    from training.utils.data.collate import pad_sequences
    from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
    from training.utils.model import load_tokenizer

    tok = load_tokenizer("tiny", padding_side="left")
    _, held_out = train_eval(300, 0)
    ids = [prompt_token_ids(tok, render_prompt(tok, to_messages(r["prompt"])), "auto") for r in held_out[:24]]
    blank = [i for i in range(len(tok)) if tok.decode([i], skip_special_tokens=True).strip() == ""]
    return (*pad_sequences(ids, tok.pad_token_id, left=True), torch.tensor(blank))


@torch.no_grad()
def blank_probability(model_name: str) -> float:
    """Mean probability (at the rollout temperature) that the first answer token is blank."""
    from training.utils.model import load_causal_lm, load_tokenizer

    ids, mask, blank = _prompt_batch()
    model = load_causal_lm(model_name, load_tokenizer("tiny"), seed=3).eval()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
    return torch.softmax(logits / TEMPERATURE, -1)[:, blank].sum(-1).mean().item()
