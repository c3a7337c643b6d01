"""Reward model and critic: a causal-LM backbone plus a scalar head, in Hugging Face's
sequence-classification layout (``AutoModelForSequenceClassification``, ``num_labels=1``).

The score of a sequence is the head's value at its last real token (the EOS closing every
answer), located explicitly by ``end_index`` rather than by looking for padding, so models whose
pad token equals EOS are scored correctly.  Saved directories load back with
``AutoModelForSequenceClassification.from_pretrained``; Stage 3 loads them as reward model and
as critic initialisation.
"""
from __future__ import annotations

import torch

from .loader import clean_config, local_path, resolve, set_dropout, tiny_config


def load_reward_model(name: str, tokenizer, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                      dropout: float = -1.0, seed: int = 1234):
    """A scalar-head model from a causal LM (new head) or a saved reward model (trained head)."""
    from transformers import AutoModelForSequenceClassification

    src = resolve(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the new head's initialisation is seeded too
        if src.kind == "tiny":
            cfg = tiny_config(name, tokenizer)
            cfg.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(cfg).to(dtype)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                local_path(name), num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code)
    clean_config(model.config)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    set_dropout(model, dropout)
    head(model)  # fail early on architectures without a scalar head
    return model


def activation_checkpointing(model) -> bool:
    """Whether a Hugging Face model (or a DeepSpeed engine around one) recomputes activations in
    backward (transformers 5 names it ``is_activation_checkpointing``; earlier ``is_gradient_checkpointing``)."""
    m = getattr(model, "module", model)          # a DeepSpeed engine's module
    flag = "is_activation_checkpointing" if hasattr(m, "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(m, flag, False))


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head(model) -> torch.nn.Module:
    m = _unwrap(model)
    for name in ("score", "classifier", "v_head"):
        h = getattr(m, name, None)
        if isinstance(h, torch.nn.Module):
            return h
    raise TypeError(f"{type(m).__name__} has no scalar head (score/classifier)")


class ValueModel(torch.nn.Module):
    """What DeepSpeed wraps: forward gives the head's value at every position, float32 [B, T].

    ``.model`` is the Hugging Face sequence-classification model (possibly LoRA-wrapped), the
    thing that is saved.  With ``use_cache`` the forward returns ``(values, past_key_values)``:
    the answer columns of rows that share a prompt then run from the prompt's cache
    (``shared_prefix.state_values``).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def is_activation_checkpointing(self) -> bool:
        return activation_checkpointing(_unwrap(self.model))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False):
        m = _unwrap(self.model)
        kw = {} if position_ids is None else {"position_ids": position_ids}
        out = m.base_model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                           use_cache=use_cache, **kw)
        values = head(m)(out.last_hidden_state).squeeze(-1).float()
        return (values, out.past_key_values) if use_cache else values


def end_scores(values: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
    """values[b, end_index[b]]: the score of each sequence."""
    return values.gather(1, end_index.unsqueeze(1)).squeeze(1)
