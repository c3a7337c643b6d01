"""The error body of every HTTP answer of the chat server and the labelling page (OpenAI's shape), the
exception the routes raise for it, and reading a JSON request body."""
from __future__ import annotations

import json
from typing import Optional


class HTTPError(Exception):
    """A 4xx / 5xx answer: the server's exception handler turns it into ``error_response``."""

    def __init__(self, status: int, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


async def json_body(http):
    """The request's body parsed as JSON; ``HTTPError`` 400 when it is not."""
    try:
        return json.loads(await http.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPError(400, f"request body is not valid JSON: {e}") from e


def error_response(status: int, message: str, param: Optional[str] = None):
    """``{"error": {"message", "type", "param", "code"}}`` with ``status``; type ``server_error`` from 500 on."""
    from fastapi.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                               "param": param, "code": None}})
