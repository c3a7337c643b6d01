"""OpenAI-compatible HTTP server over a ``ChatEngine`` (FastAPI + uvicorn).

    POST /v1/chat/completions   (stream and non-stream; max_tokens, temperature, top_p, stop, n; tools and
                                 tool_choice, answered with tool_calls: applications/tool_calls.py)
    GET  /v1/models
    GET  /v1/tools, POST /v1/tools/run   (with --tools: the tools the server runs for its chat page)
    GET  /health
    GET  /                      (a chat page: streams from /v1/chat/completions, keeps the history)

With API keys (``applications/auth.py``: ``--api-key``, ``--api-key-file``, ``SPEEDCHAT_API_KEY``) every
``/v1/*`` request needs ``Authorization: Bearer KEY`` (401 otherwise); ``/health`` and the page itself
stay open (the page asks for the key and sends it). Binding a non-loopback address without a key is
refused unless ``--no-auth``.

Requests go to one queue (``batcher.py``): a worker thread batches the ones with equal sampling settings, so
concurrent requests share the model without mixing their answers. Request size, ``max_tokens``, ``n`` and the
queue length are bounded (``schema.py``); violations get a 4xx (or 503) with an OpenAI-style
``{"error": {"message": ...}}`` body.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse

from applications.auth import LOOPBACK, Keys, refuse_open_binding
from applications.batcher import Batcher, _Job
from applications.chat_engine import Completion, Request, Sampling
from applications.collect import COMPARE_TEMPERATURE
from applications.collect import add_route as add_feedback_route
from applications.errors import HTTPError, error_response
from applications.reload import Served
from applications.reload import add_route as add_reload_route
from applications.schema import CalledFunction, ChatRequest, Limits, parse_request
from applications.tool_calls import answer_message, forced_opening, to_model_messages
from training.utils.tools.parsers import Call as ParsedCall

log = logging.getLogger(__name__)


def create_app(engine, limits: Optional[Limits] = None, keys: Optional[Keys] = None, labels=None,
               tools=None, max_turns: int = 4, collect=None):
    """The app; ``engine`` is a ``ChatEngine``, or a ``reload.Served`` (a model the admin can swap: ``POST
    /admin/reload``); ``labels`` (a ``labelling.LabelStore``) adds the labelling page at ``/label``; ``tools`` (a
    ``ToolEnvironment``: ``chat.py --serve --tools``) are offered to the chat page, which has the server run
    the model's calls (``GET /v1/tools``, ``POST /v1/tools/run``), up to ``max_turns`` turns a question;
    ``collect`` (a ``collect.Collector``: ``--collect DIR``) records every answer and takes thumbs on them
    (``POST /v1/feedback``)."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse, StreamingResponse
    from fastapi.security import HTTPBearer

    limits = limits or Limits()
    keys = keys or Keys({})
    bearer = HTTPBearer(auto_error=False, description="an API key of this server (--api-key), when it has any")

    def authorised(http: HTTPRequest, _=Depends(bearer)) -> Optional[str]:
        """The name of the key's holder (None when the server has no keys); 401 for a missing or wrong key."""
        if not keys:
            return None
        name = keys.who(http.headers.get("authorization"))
        if name is None:
            raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        return name

    app = FastAPI(title="SpeedChat", version="1")

    @app.exception_handler(HTTPError)
    async def http_error(_, e: HTTPError):
        return error_response(e.status, e.message, e.param)
    served = engine if isinstance(engine, Served) else Served(engine)
    background: set = set()         # tasks that outlive their request (--compare's second answers)

    def spawn(coro) -> None:
        task = asyncio.ensure_future(coro)
        background.add(task)

        def done(t):
            background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("a background task failed: %r", t.exception())
        task.add_done_callback(done)
    batcher = Batcher(served.engine, limits)
    served.on_swap.append(lambda new: setattr(batcher, "engine", new))      # read once per batch
    app.state.batcher, app.state.served = batcher, served
    created = int(time.time())

    page = (Path(__file__).parent / "static" / "chat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def chat_page():
        return page

    @app.get("/health")
    def health():
        return {"status": "ok", "model": served.name, "version": served.version, "queued": batcher.q.qsize(),
                "collecting": collect is not None}

    add_feedback_route(app, collect, authorised)
    add_reload_route(app, served)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": created,
                                            "owned_by": "speedchat", "version": served.version}]}

    @app.get("/v1/tools", dependencies=[Depends(authorised)])
    def server_tools():
        """The tools this server runs for its chat page (none without --tools)."""
        return {"tools": tools.tools if tools is not None else [], "max_turns": max_turns}

    @app.post("/v1/tools/run", dependencies=[Depends(authorised)])
    async def run_tool(http: HTTPRequest):
        """Run one call of the model with a server tool: {"name", "arguments": a JSON object as a string}."""
        if tools is None:
            return error_response(404, "this server runs no tools (start it with --tools)")
        try:
            data = json.loads(await http.body())
            call = CalledFunction.model_validate(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return error_response(400, f"request body is not valid JSON: {e}")
        except ValidationError as e:
            err = e.errors()[0]
            return error_response(400, f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}")
        (result,) = await asyncio.to_thread(tools.executor.run, [ParsedCall(call.name, json.loads(call.arguments))])
        return {"name": result.name, "status": result.status, "content": result.content}

    # the body is read by hand (its size is checked before parsing, errors answer in OpenAI's form), so
    # the OpenAPI schema (/docs) is told what it accepts: ChatRequest, with its fields' ranges
    request_schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    request_defs = request_schema.pop("$defs", {})

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": request_schema}}}})
    async def chat(http: HTTPRequest):
        try:
            length = int(http.headers.get("content-length") or 0)
            if length > limits.max_request_bytes:
                raise HTTPError(413, f"request body is {length} bytes; the limit is {limits.max_request_bytes}")
            engine, version_at_start, _ = served.current    # this request's model, also when a reload swaps it
            req = parse_request(await http.body(), engine, limits)
            max_tokens = req.asked_tokens() or min(limits.default_max_tokens, limits.max_tokens)
            msgs = to_model_messages([m.model_dump() for m in req.messages])
            schemas = req.tool_schemas()
            opening = forced_opening(req.tool_choice, schemas) if schemas else ""
            try:
                ids, _ = engine.prompt_ids(msgs, max_tokens, schemas)
            except ValueError as e:          # ContextOverflow, or the last message is not the user's
                raise HTTPError(400, str(e), "messages") from e
            ids = ids + (engine.tok(opening, add_special_tokens=False)["input_ids"] if opening else [])
        except HTTPError as e:
            return error_response(e.status, e.message, e.param)
        stops = req.stop_list() + engine.default_stop
        sampling = Sampling(temperature=req.temperature, top_p=req.top_p)
        loop = asyncio.get_running_loop()
        rid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "created": now, "model": engine.name}

        def collected(done: list[Completion]):
            """With --collect: the answers' ids noted now, their records written by the task returned."""
            if collect is None:
                return None
            answer_ids = collect.note(rid, len(done))
            sampling_used = {"temperature": req.temperature, "top_p": req.top_p, "max_tokens": max_tokens}
            version = {"id": served.name, "version": version_at_start}
            texts = [opening + c.text for c in done]

            async def after():
                await asyncio.to_thread(collect.record, answer_ids, msgs, texts, sampling_used, version)
                if collect.compare and len(done) == 1 and not schemas:
                    spawn(second_answer(answer_ids[0], texts[0]))
            return BackgroundTask(after)

        async def second_answer(answer_id: str, first: str) -> None:
            """--compare: another answer to the same conversation, generated when no request waits, queued with
            the served one for labelling."""
            fut = loop.create_future()
            s = Sampling(temperature=max(req.temperature, COMPARE_TEMPERATURE), top_p=req.top_p)
            if not batcher.submit_idle(_Job([Request(ids, max_tokens, stops)], s, loop, fut)):
                log.warning("--compare: %d second answers already wait; none for %s", limits.max_queue, answer_id)
                return
            second = (await fut)[0]
            await asyncio.to_thread(collect.pair, answer_id, msgs, first, second.text)

        def answer(c: Completion) -> dict:
            """{message, finish_reason} of a completion: its calls parsed when the request has tools."""
            if not schemas:
                return {"message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            message, finish = answer_message(opening + c.text)
            return {"message": message, "finish_reason": finish or c.finish_reason}

        if not req.stream:
            fut = loop.create_future()
            try:
                batcher.submit(_Job([Request(ids, max_tokens, stops) for _ in range(req.n)], sampling, loop, fut))
            except HTTPError as e:
                return error_response(e.status, e.message)
            try:
                done: list[Completion] = await fut
            except Exception as e:
                return error_response(500, f"generation failed: {type(e).__name__}: {e}")
            out = sum(c.completion_tokens for c in done)
            body = {**head, "object": "chat.completion",
                    "choices": [{"index": i, **answer(c), "logprobs": None} for i, c in enumerate(done)],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": out, "total_tokens": len(ids) + out}}
            return JSONResponse(body, background=collected(done))       # the record is written after the answer

        deltas: asyncio.Queue = asyncio.Queue()

        def pusher(i):
            return lambda text: loop.call_soon_threadsafe(deltas.put_nowait, (i, text))

        fut = loop.create_future()
        try:      # with tools the answer is sent whole once it is parsed (its calls are not text deltas)
            batcher.submit(_Job([Request(ids, max_tokens, stops, None if schemas else pusher(i)) for i in range(req.n)],
                                sampling, loop, fut))
        except HTTPError as e:
            return error_response(e.status, e.message)

        def chunk(i, delta, finish=None):
            return "data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": [
                {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + "\n\n"

        async def events():
            for i in range(req.n):
                yield chunk(i, {"role": "assistant", "content": ""})
            waiter = asyncio.ensure_future(asyncio.shield(fut))
            while True:
                getter = asyncio.ensure_future(deltas.get())
                finished, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    i, text = getter.result()
                    yield chunk(i, {"content": text})
                    continue
                getter.cancel()
                break
            while not deltas.empty():       # deltas queued before the batch finished
                i, text = deltas.get_nowait()
                yield chunk(i, {"content": text})
            try:
                done = fut.result()
            except Exception as e:
                yield (
                    "data: "
                    + json.dumps({"error": {"message": f"generation failed: {e}", "type": "server_error"}})
                    + "\n\n"
                )
                return
            for i, c in enumerate(done):
                if schemas:
                    a = answer(c)
                    msg = a["message"]
                    if msg.get("content"):
                        yield chunk(i, {"content": msg["content"]})
                    if msg.get("tool_calls"):
                        yield chunk(
                            i, {"tool_calls": [{"index": k, **call} for k, call in enumerate(msg["tool_calls"])]}
                        )
                    yield chunk(i, {}, a["finish_reason"])
                else:
                    yield chunk(i, {}, c.finish_reason)
            task = collected(done)
            if task is not None:        # recorded before [DONE]: a client that stops reading there cancels us
                await task()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    if labels is not None:
        from applications.labelling import add_routes

        add_routes(app, labels, authorised)

    plain_openapi = app.openapi

    def openapi():
        schema = plain_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(request_defs)
        return schema
    app.openapi = openapi
    return app


def serve(engine, host: str = "127.0.0.1", port: int = 8000, limits: Optional[Limits] = None,
          keys: Optional[Keys] = None, no_auth: bool = False, **features) -> None:
    """Serve ``engine`` (a ``ChatEngine`` or ``reload.Served``); ``features`` are ``create_app``'s: ``labels``,
    ``tools``, ``max_turns``, ``collect``."""
    import uvicorn

    labels, tools, collect = features.get("labels"), features.get("tools"), features.get("collect")
    keys = keys or Keys({})
    refuse_open_binding(host, keys, no_auth)       # AuthError before anything is bound
    if not keys and host not in LOOPBACK:
        log.warning("serving on %s without API keys (--no-auth): anyone who reaches it can use it", host)
    log.info(
        "serving %s on http://%s:%d/v1 (max_batch %d; %s)",
        engine.name,
        host,
        port,
        (limits or Limits()).max_batch,
        f"{len(keys.named)} API key(s): {', '.join(keys.named)}" if keys else "no API key",
    )
    if labels is not None:
        log.info("labelling page: http://%s:%d/label (%d of %d comparisons have a verdict in %s)", host, port,
                 len(labels.done), len(labels.items), labels.out)
    if tools is not None:
        log.info("the chat page's tools, run here: %s", ", ".join(t["function"]["name"] for t in tools.tools))
    if collect is not None:
        log.info("collecting every answer and its thumbs in %s (%d answers so far)", collect.dir, len(collect.answers))
    uvicorn.run(create_app(engine, limits, keys, **features), host=host, port=port, log_level="info")


class Background:
    """The server in a thread of this process (tests, the load benchmark): ``with Background(app) as url``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
