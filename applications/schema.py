"""The chat-completions request: the server's limits, the OpenAI request body as pydantic models, and
``parse_request``, which turns a body into a checked ``ChatRequest`` or an ``HTTPError`` naming the field."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from applications.chat_engine import ChatEngine
from applications.errors import HTTPError


@dataclass
class Limits:
    max_batch: int = 16
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_request_bytes: int = 1 << 20
    max_messages: int = 256
    max_n: int = 8
    max_queue: int = 256
    batch_wait_s: float = 0.01      # after the first request, how long to wait for more to batch


class Function(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: Optional[str] = None
    parameters: Optional[dict] = None


class Tool(BaseModel):
    type: Literal["function"]
    function: Function


class CalledFunction(BaseModel):
    name: str = Field(min_length=1)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v):
        try:
            ok = isinstance(json.loads(v), dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise ValueError("must be a JSON object, as a string")
        return v


class ToolCall(BaseModel):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: Optional[Union[str, list[dict]]] = None
    tool_calls: Optional[list[ToolCall]] = None      # an assistant's earlier calls
    tool_call_id: Optional[str] = None               # the call a tool message answers
    name: Optional[str] = None

    @field_validator("content")
    @classmethod
    def _text(cls, v):
        if isinstance(v, list):        # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in v):
                raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
            v = "".join(p["text"] for p in v)
        return v

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only for an assistant message with tool_calls)")
        return self


class ChatRequest(BaseModel):
    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Optional[Union[str, list[str]]] = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    user: Optional[str] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], dict]] = None

    @field_validator("tool_choice")
    @classmethod
    def _choice(cls, v):
        if isinstance(v, dict) and not (v.get("type") == "function" and isinstance(v.get("function"), dict)
                                        and isinstance(v["function"].get("name"), str)):
            raise ValueError('expected "none", "auto", "required" or {"type": "function", "function": {"name": ...}}')
        return v

    def tool_schemas(self) -> list[dict]:
        """The tools the model is shown (none with tool_choice "none")."""
        if not self.tools or self.tool_choice == "none":
            return []
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def asked_tokens(self) -> Optional[int]:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``; None when neither is given."""
        return self.max_completion_tokens or self.max_tokens


def parse_request(body: bytes, engine: ChatEngine, limits: Limits) -> ChatRequest:
    if len(body) > limits.max_request_bytes:
        raise HTTPError(413, f"request body is {len(body)} bytes; the limit is {limits.max_request_bytes}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPError(400, f"request body is not valid JSON: {e}") from e
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise HTTPError(400, f"{loc}: {err['msg']}", loc) from e
    if len(req.messages) > limits.max_messages:
        raise HTTPError(400, f"{len(req.messages)} messages; the limit is {limits.max_messages}", "messages")
    if req.n > limits.max_n:
        raise HTTPError(400, f"n = {req.n}; the limit is {limits.max_n}", "n")
    mt = req.asked_tokens()
    if mt is not None and mt > limits.max_tokens:
        raise HTTPError(400, f"max_tokens = {mt} exceeds this server's limit of {limits.max_tokens}", "max_tokens")
    stops = req.stop_list()
    if len(stops) > 4 or any(not s for s in stops):
        raise HTTPError(400, "stop: at most 4 non-empty strings", "stop")
    if req.model not in (None, "", engine.name):
        raise HTTPError(404, f"model {req.model!r} is not served here; this server has {engine.name!r}", "model")
    if req.tool_choice not in (None, "none", "auto") and not req.tools:
        raise HTTPError(400, "tool_choice asks for a call, but the request has no tools", "tool_choice")
    if isinstance(req.tool_choice, dict) and req.tool_choice["function"]["name"] not in \
            {t.function.name for t in req.tools}:
        raise HTTPError(400, f"tool_choice names {req.tool_choice['function']['name']!r}, which is not among the "
                             "request's tools", "tool_choice")
    if req.tools and req.n > 1:
        raise HTTPError(400, "n > 1 with tools is not offered; ask n = 1", "n")
    return req
