"""The Hybrid Engine: one object owns the actor's DeepSpeed engine and switches it between ZeRO
training and fast generation for rollouts.

- ``train()``: ZeRO-partitioned parameters, gradient checkpointing as configured.
- ``generate()``: eval mode, KV cache on.  With ZeRO-3 the parameters are gathered once for the
  whole rollout batch and DeepSpeed's per-module fetch/release hooks are lifted for its duration
  (instead of one all-gather per layer per token); with LoRA the adapters are merged for the
  rollout and unmerged after; on CUDA the decode step can run with a static KV cache, compiled;
  a prompt repeated over a group's rows is prefilled once (``shared_prefix.py``).
  Each sequence stops at EOS.
The generation itself is the one every caller uses (``generation.py``); ``PlainHFBackend`` there is the
same interface on a plain model, the reference the tests and the rollout benchmark compare with.
"""
from __future__ import annotations

import contextlib
import torch

from .generation import GenerationSettings, hf_generate


@contextlib.contextmanager
def zero3_gathered_without_hooks(engine):
    """Gather every ZeRO-3 parameter once and lift the per-module hooks until exit."""
    import deepspeed

    offload = getattr(engine.optimizer, "parameter_offload", None)
    if offload is None:
        raise RuntimeError("ZeRO-3 engine without parameter offload hooks: is it a ZeRO-3 training engine?")
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        offload._remove_module_hooks()
        for p in params:
            if hasattr(p, "ds_active_sub_modules"):
                p.ds_active_sub_modules.clear()
        try:
            yield
        finally:
            offload.forward_hooks, offload.backward_hooks = [], []
            offload.setup_zero_stage3_hooks()


class HybridEngine:
    """Wraps the actor's DeepSpeed engine; ``generate`` is the rollout, ``engine`` trains."""

    def __init__(self, engine, tokenizer, zero_stage: int):
        self.engine, self.tok, self.zero_stage = engine, tokenizer, zero_stage
        self._session = False

    @property
    def module(self):
        return self.engine.module

    def train(self):
        self.engine.train()
        return self

    def eval(self):
        self.engine.eval()
        return self

    def _lm(self):
        m = self.engine.module
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @contextlib.contextmanager
    def _rollout_weights(self):
        m = self.engine.module
        lora = hasattr(m, "merge_adapter") and hasattr(m, "peft_config")
        gather = zero3_gathered_without_hooks(self.engine) if self.zero_stage == 3 else contextlib.nullcontext()
        with gather:
            if lora:
                m.merge_adapter()
            try:
                yield
            finally:
                if lora:
                    m.unmerge_adapter()

    @contextlib.contextmanager
    def session(self):
        """Several ``generate`` calls on one set of rollout weights (a multi-turn rollout's turns): ZeRO-3
        gathers, and LoRA merges, once for the session instead of once per call."""
        if self._session:
            yield self
            return
        was_training = self.engine.module.training
        self.engine.eval()
        try:
            with self._rollout_weights():
                self._session = True
                try:
                    yield self
                finally:
                    self._session = False
        finally:
            if was_training:
                self.engine.train()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings):
        """The sequences [B, L]; with ``settings.return_logprobs`` (sequences, log-probs [B, L - P])."""
        with self.session():
            return hf_generate(self._lm(), self.tok, input_ids, attention_mask, settings)
