"""The OpenAI-compatible server: schema, SSE streaming, 4xx errors, concurrent batching."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from applications.chat_engine import ChatEngine, Sampling
from applications.server import Background, Limits, create_app


@pytest.fixture(scope="module")
def engine():
    return ChatEngine("tiny", template="plain")


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine, Limits(max_tokens=64, max_request_bytes=4096, max_n=4)))


def body(content="What is 2 + 3?", **kw):
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 10,
            "temperature": 0, **kw}


def test_health_and_models(client):
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/v1/models").json()
    assert m["object"] == "list" and m["data"][0]["id"] == "tiny" and m["data"][0]["object"] == "model"


def test_non_stream_schema_and_greedy_answer(client, engine):
    r = client.post("/v1/chat/completions", json=body())
    assert r.status_code == 200
    j = r.json()
    assert j["object"] == "chat.completion" and j["id"].startswith("chatcmpl-") and j["model"] == "tiny"
    assert isinstance(j["created"], int)
    (c,) = j["choices"]
    assert c["index"] == 0 and c["message"]["role"] == "assistant" and c["finish_reason"] in ("stop", "length")
    expect = engine.reply([{"role": "user", "content": "What is 2 + 3?"}], 10, Sampling(greedy=True))
    assert c["message"]["content"] == expect.text
    u = j["usage"]
    assert u["prompt_tokens"] == expect.prompt_tokens and u["completion_tokens"] == expect.completion_tokens
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


@pytest.mark.parametrize("temperature", [1.38e-63, 5e-324, 9.9e-6])
def test_a_temperature_too_small_to_sample_from_is_greedy(client, temperature):
    """logits / 1e-63 overflow to inf (a 500 from torch's sampler before): under 1e-5 the answer is greedy."""
    greedy = client.post("/v1/chat/completions", json=body(content="0")).json()["choices"][0]["message"]["content"]
    r = client.post("/v1/chat/completions", json=body(content="0", temperature=temperature))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == greedy
    assert Sampling(temperature=temperature).key() == (True,) and Sampling(temperature=1e-5).key() == (False, 1e-5, 0.9)


def test_sse_stream_matches_non_stream_and_ends_with_done(client):
    plain = client.post("/v1/chat/completions", json=body()).json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json=body(stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_n_choices_and_stop_string(client):
    j = client.post("/v1/chat/completions", json=body(n=3, temperature=0.9, top_p=0.9, max_tokens=6)).json()
    assert [c["index"] for c in j["choices"]] == [0, 1, 2]
    first = client.post("/v1/chat/completions", json=body(max_tokens=10)).json()["choices"][0]["message"]["content"]
    stop = first[3:6]
    j = client.post("/v1/chat/completions", json=body(max_tokens=10, stop=[stop])).json()
    assert j["choices"][0]["message"]["content"] == first[:first.index(stop)].rstrip()
    assert j["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("payload, status, words", [
    (b"{not json", 400, "not valid JSON"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    (body(max_tokens=65), 400, "max_tokens = 65 exceeds this server's limit of 64"),
    (body(max_tokens=0), 400, "max_tokens"),
    (body(temperature=3), 400, "temperature"),
    (body(top_p=0), 400, "top_p"),
    (body(n=5), 400, "n = 5; the limit is 4"),
    (body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (body(model="gpt-4"), 404, "not served here"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 400,
     "last message must come from the user"),
    (body(content="word " * 600), 400, "exceeds the 512-token context"),
    (body(content="x" * 5000), 413, "the limit is 4096"),
])
def test_bad_requests_get_4xx_with_a_message(client, payload, status, words):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    r = client.post("/v1/chat/completions", content=data, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"] == "invalid_request_error"


def test_concurrent_requests_each_get_their_own_answer(engine):
    prompts = [f"Question number {k}: what is {k} + {2 * k}?" for k in range(10)]
    singles = [engine.reply([{"role": "user", "content": p}], 12, Sampling(greedy=True)).text for p in prompts]
    assert len(set(singles)) > 1                    # different prompts, different answers: mixing would show
    app = create_app(engine, Limits(max_batch=8, batch_wait_s=0.05))
    with Background(app) as url:
        def ask(p):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
                "messages": [{"role": "user", "content": p}], "max_tokens": 12, "temperature": 0})
            return r.json()["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(ask, prompts))
    assert answers == singles
    assert app.state.batcher.batches < len(prompts)          # some requests shared a batch
