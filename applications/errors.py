"""The error body of every HTTP answer of the chat server and the labelling page (OpenAI's shape)."""
from __future__ import annotations

from typing import Optional


def error_response(status: int, message: str, param: Optional[str] = None):
    """``{"error": {"message", "type", "param", "code"}}`` with ``status``; type ``server_error`` from 500 on."""
    from fastapi.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                               "param": param, "code": None}})
