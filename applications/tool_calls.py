"""OpenAI's tool calling over the project's tool format (``training/utils/tools``).

- Requests: an assistant message's ``tool_calls`` become the call text the model writes (Hermes
  ``<tool_call>{json}</tool_call>``), ``tool`` messages keep their content, named after their call.
- ``tool_choice``: ``none`` shows no tools; ``auto`` (default) lets the model choose; ``required`` and
  ``{"type": "function", "function": {"name": N}}`` start the answer with the call's opening, so the
  model writes a call (to N).
- Answers: the calls parsed from the text become ``tool_calls`` (ids ``call_...``, arguments as a JSON
  string) with ``finish_reason: "tool_calls"``; text outside them stays the content.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional

from training.utils.tools.parsers import Parsed, hermes


def call_text(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def to_model_messages(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages -> the messages the chat template renders (calls as the model writes them)."""
    names: dict[str, str] = {}
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            parts = [m["content"]] if m.get("content") else []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                parts.append(call_text(c["function"]["name"], json.loads(c["function"]["arguments"])))
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif m["role"] == "tool":
            out.append({"role": "tool", "name": m.get("name") or names.get(m.get("tool_call_id") or "", "tool"),
                        "content": m["content"] or ""})
        else:
            out.append({"role": m["role"], "content": m["content"] or ""})
    return out


def forced_opening(tool_choice, tools: list[dict]) -> str:
    """The text the answer starts with for ``tool_choice`` (empty: the model chooses)."""
    if tool_choice == "required":
        return '<tool_call>\n{"name": "'
    if isinstance(tool_choice, dict):
        return '<tool_call>\n{"name": ' + json.dumps(tool_choice["function"]["name"]) + ', "arguments": '
    return ""


def answer_message(text: str) -> tuple[dict, Optional[str]]:
    """(the assistant message, "tool_calls" or None) of a generated ``text``: its readable calls as
    ``tool_calls``; a text whose calls cannot be read stays content, as it was written."""
    parsed: Parsed = hermes(text)
    good = [c for c in parsed.calls if not c.error]
    if not good or len(good) < len(parsed.calls):
        return {"role": "assistant", "content": text}, None
    calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
              "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in good]
    return {"role": "assistant", "content": parsed.content or None, "tool_calls": calls}, "tool_calls"
