"""The rollout seam: a prompt batch in, generated sequences with their masks out.

``SingleTurn`` is one answer per row through the Hybrid Engine (or any object with its ``generate``);
``multiturn.MultiTurn`` alternates the model's turns with an environment's observations. The
experience maker knows only this interface: ``rollout(batch, settings) -> (batch, Generated)``, where
the returned batch is the one the reward sources read (its ``input_ids`` are the prompts the
sequences start from).

The engine under a rollout (``--rollout_engine``, ``ROLLOUT_ENGINES``) is anything with the Hybrid
Engine's ``session()`` and ``generate(input_ids, attention_mask, settings)``: the Hybrid Engine itself, or
vLLM fed the actor's weights (``vllm_engine.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..generation import GenerationSettings
from .sequences import answer_layout


@dataclass
class Generated:
    sequences: torch.Tensor          # [B, L]: left-padded prompt | generated (and observation) tokens | padding
    attention_mask: torch.Tensor     # [B, L]
    action_mask: torch.Tensor        # [B, L-1] float: 1 at the states whose next token the model sampled
    end_index: torch.Tensor          # [B] the last real token (the model's last sampled token)
    has_eos: torch.Tensor            # [B] bool: the model's last turn ended with EOS
    logprobs: Optional[torch.Tensor] = None    # [B, L-1] sampling-time log-probs in the action layout
    metrics: dict = field(default_factory=dict)


def _vllm(cfg, actor, tokenizer):
    from ..vllm_engine import VLLMEngine

    return VLLMEngine.from_config(cfg, actor, tokenizer)


ROLLOUT_ENGINES = {          # --rollout_engine: (cfg, the actor's Hybrid Engine, tokenizer) -> the rollout engine
    "hybrid": lambda cfg, actor, tokenizer: actor,
    "vllm": _vllm,
}


def rollout_engine(cfg, actor, tokenizer):
    """The engine the rollouts generate with."""
    return ROLLOUT_ENGINES[cfg.rl.rollout.rollout_engine](cfg, actor, tokenizer)


class SingleTurn:
    """One sampled answer per row."""

    def __init__(self, engine, eos_token_id: int):
        self.engine, self.eos = engine, eos_token_id

    def __call__(self, batch: dict, settings: GenerationSettings) -> tuple[dict, Generated]:
        out = self.engine.generate(batch["input_ids"], batch["attention_mask"], settings)
        seq, logp = out if settings.return_logprobs else (out, None)
        attn, action, end, has_eos = answer_layout(seq, batch["attention_mask"], self.eos)
        if logp is not None:                         # [B, L - P] -> the action layout [B, L-1]
            logp = torch.nn.functional.pad(logp, (batch["input_ids"].shape[1] - 1, 0))
        return batch, Generated(seq, attn, action, end, has_eos, logp, dict(getattr(self.engine, "metrics", {})))
