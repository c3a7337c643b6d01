"""The chat engine shared by the terminal chat and the HTTP server.

One loaded model + tokenizer, prompt building from a message history (the tokenizer's chat
template or the ``" Human: ... Assistant:"`` format, oldest turns dropped when the context would
overflow), and batched generation through the project's one generate (``training/utils/generation.py``,
Hugging Face ``generate``) with per-row limits, stop
strings (the next user turn is always one in the plain format) and incremental text deltas for
streaming.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from training.utils.data.collate import pad_sequences
from training.utils.data.format import HUMAN, prompt_token_ids, render_prompt, uses_chat_template
from training.utils.generation import GenerationSettings, hf_generate
from training.utils.model import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


class ContextOverflow(ValueError):
    """The newest user message alone does not fit the context with the requested answer length."""


MIN_TEMPERATURE = 1e-5      # below it the logits / temperature overflow: sampled greedily (as vLLM does)


@dataclass
class Sampling:
    """How to pick tokens: greedy, or temperature + top-p sampling (a temperature under
    ``MIN_TEMPERATURE``, 0 included, is greedy)."""
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.9

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature < MIN_TEMPERATURE

    def key(self) -> tuple:
        return (True,) if self.is_greedy else (False, self.temperature, self.top_p)

    def settings(self, max_new_tokens: int) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=not self.is_greedy,
                                  temperature=self.temperature, top_p=self.top_p, top_k=0)


@dataclass
class Request:
    """One sequence to generate: prompt token ids, its own answer limit and stop strings."""
    prompt_ids: list[int]
    max_new_tokens: int
    stop: Sequence[str] = ()
    on_delta: Optional[Callable[[str], None]] = None   # called with each new piece of text


@dataclass
class Completion:
    text: str
    finish_reason: str            # "stop" (EOS or a stop string) or "length"
    completion_tokens: int
    prompt_tokens: int


@dataclass
class _Row:
    req: Request
    start: int
    done: bool = False
    finish: str = "length"
    text: str = ""
    emitted: int = 0
    tokens: int = 0
    hold: int = field(init=False)

    def __post_init__(self):
        self.hold = max((len(s) for s in self.req.stop), default=1) - 1


class _Rows(StoppingCriteria):
    """Decodes each row after every step: EOS, stop strings, per-row limits, streamed deltas."""

    def __init__(self, tok, rows: list[_Row]):
        self.tok, self.rows = tok, rows

    def __call__(self, input_ids, scores, **kw):
        eos = self.tok.eos_token_id
        flags = []
        for i, row in enumerate(self.rows):
            if not row.done:
                new = input_ids[i, row.start:].tolist()
                finished_eos = bool(new) and new[-1] == eos
                ids = new[:-1] if finished_eos else new
                row.tokens = len(new)
                text = self.tok.decode(ids, skip_special_tokens=True).lstrip()
                cut = min((text.find(s) for s in row.req.stop if s and s in text), default=-1)
                if cut >= 0:
                    text, row.done, row.finish = text[:cut].rstrip(), True, "stop"
                elif finished_eos:
                    row.done, row.finish = True, "stop"
                elif row.tokens >= row.req.max_new_tokens:
                    row.done, row.finish = True, "length"
                row.text = text
                self._emit(row)
            flags.append(row.done)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    @staticmethod
    def _emit(row: _Row) -> None:
        # Hold back what could still become a stop string, trailing whitespace (cut with a stop
        # string) and half-decoded UTF-8 characters.
        safe = len(row.text) if row.done else len(row.text[:max(0, len(row.text) - row.hold)].rstrip())
        while not row.done and safe > row.emitted and row.text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > row.emitted:
            piece, row.emitted = row.text[row.emitted:safe], safe
            if row.req.on_delta is not None:
                row.req.on_delta(piece)


class ChatEngine:
    """A model ready to answer chat histories; ``generate`` is serialised by a lock."""

    def __init__(self, model: str, template: str = "auto", max_context: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, device: Optional[str] = None, trust_remote_code: bool = False):
        self.name = model
        self.tok = load_tokenizer(model, trust_remote_code=trust_remote_code, padding_side="left")
        self.template = template
        self.chat_format = uses_chat_template(self.tok, template)
        self.model = load_causal_lm(model, self.tok, dtype=dtype, trust_remote_code=trust_remote_code)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.model.config.use_cache = True
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_context = min(max_context or limit, limit)
        self._lock = threading.Lock()

    @property
    def default_stop(self) -> list[str]:
        """The next user turn ends an answer in the plain format (chat templates end with EOS)."""
        return [] if self.chat_format else [HUMAN]

    def prompt_ids(self, messages: list[dict], max_new_tokens: int,
                   tools: Optional[list[dict]] = None) -> tuple[list[int], int]:
        """Token ids of ``messages`` rendered for an answer (with ``tools``, JSON schemas, shown by the chat
        template), and how many old messages were dropped.

        System messages stay; the oldest other messages go first until prompt + answer fit."""
        if not messages or messages[-1]["role"] not in ("user", "tool"):
            raise ValueError("the last message must come from the user (or be a tool's result)")
        msgs, dropped = list(messages), 0
        budget = self.max_context - max_new_tokens
        if budget <= 0:
            raise ContextOverflow(f"max_new_tokens {max_new_tokens} leaves no room in the "
                                  f"{self.max_context}-token context")
        while True:
            ids = prompt_token_ids(self.tok, render_prompt(self.tok, msgs, self.template, tools), self.template)
            if len(ids) <= budget:
                return ids, dropped
            first = next((i for i, m in enumerate(msgs) if m["role"] != "system"), None)
            if first is None or first == len(msgs) - 1:
                raise ContextOverflow(f"the last message needs {len(ids)} prompt tokens; with {max_new_tokens} "
                                      f"new tokens that exceeds the {self.max_context}-token context")
            msgs.pop(first)
            dropped += 1

    @torch.no_grad()
    def generate(self, requests: list[Request], sampling: Sampling) -> list[Completion]:
        """One left-padded batch through ``generate``; each row stops on its own conditions."""
        ids, mask = pad_sequences([r.prompt_ids for r in requests], self.tok.pad_token_id, left=True)
        width = ids.shape[1]
        rows = [_Row(r, width) for r in requests]
        settings = sampling.settings(max(r.max_new_tokens for r in requests))
        with self._lock:
            hf_generate(self.model, self.tok, ids.to(self.device), mask.to(self.device), settings,
                        StoppingCriteriaList([_Rows(self.tok, rows)]))
        for row in rows:           # a row cut by the global limit before its own check ran
            if not row.done:
                row.done = True
                _Rows._emit(row)
        return [Completion(r.text, r.finish, r.tokens, len(r.req.prompt_ids)) for r in rows]

    def reply(self, messages: list[dict], max_new_tokens: int, sampling: Sampling,
              stop: Sequence[str] = (), on_delta: Optional[Callable[[str], None]] = None) -> Completion:
        ids, _ = self.prompt_ids(messages, max_new_tokens)
        req = Request(ids, max_new_tokens, list(stop) + self.default_stop, on_delta)
        return self.generate([req], sampling)[0]
