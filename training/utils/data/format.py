"""Prompt formats: the tokenizer's chat template, or DeepSpeed-Chat's ' Human: ... Assistant:'.

Every source is normalised to a list of chat messages for the prompt and a plain-text answer;
rendering to text happens here, in one place, for every stage and for chat/inference.
"""
from __future__ import annotations

import re
from typing import Optional

HUMAN, ASSISTANT = "Human:", "Assistant:"
_TURN_RE = re.compile(r"(?:^|\s*)(Human|Assistant):", re.MULTILINE)
ROLES = ("system", "user", "assistant", "tool")


def parse_transcript(text: str) -> Optional[list[dict]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:' -> messages [user a, assistant b, user c].

    Returns None when the text has no 'Human:' turn.  A trailing empty 'Assistant:' (the cue to
    answer) is dropped.
    """
    parts = _TURN_RE.split(text)
    if len(parts) < 3 or "Human" not in parts[1::2]:
        return None
    lead = parts[0].strip()
    msgs = [{"role": "system", "content": lead}] if lead else []
    for who, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if who == "Human" else "assistant", "content": content.strip()})
    if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    return msgs


def to_messages(prompt) -> list[dict]:
    """A prompt string (plain, or a Human/Assistant transcript) or a message list -> messages."""
    if isinstance(prompt, list):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    return parse_transcript(prompt) or [{"role": "user", "content": prompt.strip()}]


def uses_chat_template(tokenizer, mode: str) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "chat" and not has:
        raise ValueError(f"template 'chat' asked for, but tokenizer {tokenizer.name_or_path!r} has no "
                         "chat template; use --template plain or auto")
    return mode == "chat" or (mode == "auto" and has)


def render_prompt(tokenizer, messages: list[dict], mode: str = "auto", tools: list[dict] | None = None) -> str:
    """The text the model sees before its answer; with ``tools`` (JSON schemas) the chat template shows them
    (``tools/render.py``: the template's tools section, or a default system message)."""
    if tools:
        from ..tools.render import render

        return render(tokenizer, to_messages(messages), list(tools), True)
    if uses_chat_template(tokenizer, mode):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(m["content"])
        else:
            out.append(f" {HUMAN if m['role'] == 'user' else ASSISTANT} {m['content']}")
    return "".join(out) + f" {ASSISTANT}"


def render_answer(answer: str, tokenizer, mode: str = "auto") -> str:
    """The answer text as it follows the rendered prompt (DeepSpeed-Chat answers start with a space)."""
    answer = answer.strip()
    return answer if uses_chat_template(tokenizer, mode) else " " + answer


def prompt_token_ids(tokenizer, text: str, mode: str = "auto") -> list[int]:
    """Chat templates carry their own special tokens; plain prompts get the tokenizer's BOS."""
    special = not uses_chat_template(tokenizer, mode)
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def answer_token_ids(tokenizer, answer_text: str) -> list[int]:
    """Answer tokens followed by EOS: the end every reward/SFT sequence is scored at."""
    return tokenizer(answer_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
