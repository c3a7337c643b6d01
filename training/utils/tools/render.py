"""Conversations with tools through the model's own chat template.

A template with a tools section (Qwen, Llama 3.1, Hermes, ...) gets the schemas as
``apply_chat_template(..., tools=...)``. A template without one (SmolLM2's) gets a default system
message in the Hermes / Qwen format, listing the schemas and the ``<tool_call>`` syntax; ``tool``
messages then render through the template's generic role path.

Between two model turns the tokens are the template's own: ``continuation_ids`` renders the
conversation with the new observations and keeps what follows the model's last EOS, so a rollout's
tokens are the model's sampled ids plus exactly what the template puts between turns.
"""
from __future__ import annotations

import json

DEFAULT_SYSTEM = "You are a helpful assistant."
TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>")
_PROBE = [{"type": "function", "function": {"name": "probe_tool_xyz", "description": "probe",
                                            "parameters": {"type": "object", "properties": {}}}}]


class TemplateError(ValueError):
    """A chat template that cannot carry a multi-turn rollout; the message says why."""


def template_has_tools(tok) -> bool:
    """Whether the chat template renders a ``tools=`` list itself."""
    msgs = [{"role": "user", "content": "hi"}]
    try:
        with_tools = tok.apply_chat_template(msgs, tools=_PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:       # a template that rejects the argument has no tools section
        return False
    return "probe_tool_xyz" in with_tools


def tools_system_text(schemas: list[dict], system: str = DEFAULT_SYSTEM) -> str:
    return system.rstrip() + "\n\n" + TOOLS_PROMPT.format(tools="\n".join(json.dumps(s) for s in schemas))


def with_tools(tok, messages: list[dict], schemas: list[dict]) -> tuple[list[dict], dict]:
    """(messages, extra apply_chat_template arguments) that show ``schemas`` to the model."""
    if not schemas:
        return messages, {}
    if not getattr(tok, "chat_template", None):
        raise TemplateError(f"tokenizer {tok.name_or_path!r} has no chat template: tool calls and multi-turn "
                            "rollouts need one (--template plain cannot carry tool messages)")
    if template_has_tools(tok):
        return messages, {"tools": schemas}
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": tools_system_text(schemas, messages[0]["content"])}, *messages[1:]], {}
    return [{"role": "system", "content": tools_system_text(schemas)}, *messages], {}


def render(tok, messages: list[dict], schemas: list[dict], add_generation_prompt: bool) -> str:
    msgs, kw = with_tools(tok, messages, schemas)
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)


def prompt_ids(tok, messages: list[dict], schemas: list[dict]) -> list[int]:
    return tok(render(tok, messages, schemas, True), add_special_tokens=False)["input_ids"]


def continuation_ids(tok, conversation: list[dict], observations: list[dict], schemas: list[dict]) -> list[int]:
    """The template's tokens after the model's last turn (which ended with EOS): the observation
    messages and the next assistant header. ``conversation`` ends with that assistant turn."""
    before = render(tok, conversation, schemas, False)
    after = render(tok, conversation + observations, schemas, True)
    eos = tok.eos_token
    cut = before.rfind(eos)
    if cut < 0:
        raise TemplateError(f"the chat template of {tok.name_or_path!r} does not end an assistant turn with the EOS "
                            f"token {eos!r}, so the tokens between turns cannot be told apart")
    cut += len(eos)
    if after[:cut] != before[:cut]:
        raise TemplateError(f"the chat template of {tok.name_or_path!r} renders earlier turns differently once "
                            "observations follow them; multi-turn rollouts need a template that only appends")
    return tok(after[cut:], add_special_tokens=False)["input_ids"]
