"""One generate for every caller: rollouts (the Hybrid Engine), the pass-rate evaluation, the reward
model's sampled answers, and the chat engine; and one answer decoder.

``hf_generate`` is transformers' ``generate`` with the KV cache, a stop at EOS, finished rows padded,
and the sampling settings passed explicitly (a model's ``generation_config`` defaults, e.g. top_k 50,
would otherwise change the distribution that PPO's log-probs assume). ``generate_answers`` runs it
over token-id prompts in left-padded batches and decodes the answers. ``PlainHFBackend`` is the
Hybrid Engine's interface on a model as it stands (no ZeRO gathering, no LoRA merging).
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .data.collate import pad_sequences
from .shared_prefix import position_ids_from, prefix_cache, prefix_groups


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = True              # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_new_tokens: int = 0
    num_beams: int = 1                  # beam search (greedy only)
    batch_size: int = 16                # prompts per generate call (generate_answers)
    static_cache: bool = False          # static KV cache (+ compiled decode on CUDA)
    share_prompt: bool = False          # repeated prompts (a group's rows) are prefilled once
    return_logprobs: bool = False       # also the sampled tokens' log-probs at sampling time (logits / T)
    stop_strings: tuple = ()            # texts that also end a row (kept in the output), besides EOS


def hf_generate(model, tok, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings,
                stopping_criteria=None):
    """The sequences [B, L], or with ``settings.return_logprobs`` (sequences, log-probs [B, L - P] of each
    generated token from the logits it was sampled from, at temperature T: the rollout side of the
    rollout / training log-prob gap). ``stopping_criteria`` (transformers') may end rows early."""
    kw = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, use_cache=True, do_sample=settings.do_sample)
    if settings.do_sample:
        kw.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    if settings.num_beams > 1:
        kw["num_beams"] = settings.num_beams
    if settings.min_new_tokens:
        kw["min_new_tokens"] = settings.min_new_tokens
    if stopping_criteria is not None:
        kw["stopping_criteria"] = stopping_criteria
    if settings.stop_strings:
        kw.update(stop_strings=list(settings.stop_strings), tokenizer=tok)
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


def answer_ends(tok, seq: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """[B]: the index of each row's answer's last token: its first EOS after the prompt, else the last column."""
    new = seq[:, prompt_width:]
    eos = new == tok.eos_token_id
    first = torch.where(
        eos.any(1), eos.float().argmax(1), torch.full_like(eos[:, 0], new.shape[1] - 1, dtype=torch.long)
    )
    return first + prompt_width


def decode_answers(tok, seq: torch.Tensor, prompt_width: int, end: Optional[torch.Tensor] = None) -> list[str]:
    """Each row's answer text: its tokens from ``prompt_width`` to ``end`` [B] (inclusive; default
    ``answer_ends``), special tokens skipped, whitespace stripped."""
    end = answer_ends(tok, seq, prompt_width) if end is None else end
    return [tok.decode(seq[i, prompt_width:int(end[i]) + 1], skip_special_tokens=True).strip()
            for i in range(seq.shape[0])]


class PlainHFBackend:
    """Generation with a model as it stands (no gathering, no merging): the Hybrid Engine's interface."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer

    @contextlib.contextmanager
    def session(self):
        """Several generate calls in a row (the Hybrid Engine gathers its weights once for them)."""
        yield self

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, settings: GenerationSettings):
        self.model.eval()
        m = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return hf_generate(m, self.tok, input_ids, attention_mask, settings)


@torch.no_grad()
def generate_answers(model, tok, prompt_ids: Sequence[list[int]], settings: GenerationSettings,
                     progress: str = "") -> list[str]:
    """The decoded answer to each prompt (token ids), ``settings.batch_size`` prompts per left-padded
    batch; ``progress`` labels a progress bar (none when empty)."""
    from tqdm.auto import tqdm

    backend, dev = PlainHFBackend(model, tok), next(model.parameters()).device
    answers: list[str] = []
    bar = tqdm(total=len(prompt_ids), desc=progress, unit="prompt", disable=not progress, dynamic_ncols=True)
    for i in range(0, len(prompt_ids), settings.batch_size):
        chunk = prompt_ids[i:i + settings.batch_size]
        input_ids, mask = pad_sequences(list(chunk), tok.pad_token_id, left=True)
        seq = backend.generate(input_ids.to(dev), mask.to(dev), settings)
        answers += decode_answers(tok, seq, input_ids.shape[1])
        bar.update(len(chunk))
    bar.close()
    return answers
