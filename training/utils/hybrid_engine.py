"""The Hybrid Engine: one object owns the actor's DeepSpeed engine and switches it between ZeRO
training and fast generation for rollouts.

- ``train()``: ZeRO-partitioned parameters, gradient checkpointing as configured.
- ``generate()``: eval mode, KV cache on.  With ZeRO-3 the parameters are gathered once for the
  whole rollout batch and DeepSpeed's per-module fetch/release hooks are lifted for its duration
  (instead of one all-gather per layer per token); with LoRA the adapters are merged for the
  rollout and unmerged after; on CUDA the decode step can run with a static KV cache, compiled;
  a prompt repeated over a group's rows is prefilled once (``shared_prefix.py``).
  Each sequence stops at EOS.
``PlainHFBackend`` is the same generation on a plain (non-DeepSpeed) model: the reference the
tests and the rollout benchmark compare the Hybrid Engine with.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .shared_prefix import position_ids_from, prefix_cache, prefix_groups


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_new_tokens: int = 0
    static_cache: bool = False          # static KV cache (+ compiled decode on CUDA)
    share_prompt: bool = False          # repeated prompts (a group's rows) are prefilled once
    return_logprobs: bool = False       # also the sampled tokens' log-probs at sampling time (logits / T)


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

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings):
        """The sequences [B, L]; with ``settings.return_logprobs`` (sequences, log-probs [B, L - P])."""
        was_training = self.engine.module.training
        self.engine.eval()
        try:
            with self._rollout_weights():
                out = hf_generate(self._lm(), self.tok, input_ids, attention_mask, settings)
        finally:
            if was_training:
                self.engine.train()
        return out


def hf_generate(model, tok, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings):
    """transformers' ``generate`` with the KV cache, EOS stop and padding of finished rows: the sequences
    [B, L], or with ``settings.return_logprobs`` (sequences, log-probs [B, L - P] of each generated token
    from the logits it was sampled from, at temperature T: the rollout side of the rollout / training
    log-prob gap)."""
    kw = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, use_cache=True, do_sample=settings.do_sample)
    if settings.do_sample:
        # explicit values: generation_config defaults (e.g. top_k=50) would silently change the
        # sampling distribution that PPO's log-probs assume
        kw.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    if settings.min_new_tokens:
        kw["min_new_tokens"] = settings.min_new_tokens
    if settings.static_cache:
        kw["cache_implementation"] = "static"
    elif settings.share_prompt:
        # the prompt but its last token, once per distinct prompt; generate() runs from that cache
        groups = prefix_groups(input_ids, attention_mask, input_ids.shape[1] - 1)
        if groups is not None:
            kw["past_key_values"] = prefix_cache(model, input_ids, attention_mask, position_ids_from(attention_mask),
                                                 input_ids.shape[1] - 1, groups)
    if not settings.return_logprobs:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kw)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, output_logits=True,
                         return_dict_in_generate=True, **kw)
    new = out.sequences[:, input_ids.shape[1]:]
    temperature = settings.temperature if settings.do_sample else 1.0
    logp = torch.stack([torch.log_softmax(step.float() / temperature, -1).gather(1, new[:, i:i + 1]).squeeze(1)
                        for i, step in enumerate(out.logits)], 1)
    return out.sequences, logp


class PlainHFBackend:
    """Generation with a model as it stands (no gathering, no merging): the reference path."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, settings: GenerationSettings) -> torch.Tensor:
        self.model.eval()
        m = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return hf_generate(m, self.tok, input_ids, attention_mask, settings)

