"""Collection (``--collect DIR``): every answer served through the ``openai`` client, streamed or not, is recorded
with its conversation, sampling and the weights' version; thumbs become pointwise labels keyed by the answer;
without collection nothing is written; a second server on the directory is refused."""

import json

import pytest

from applications.chat_engine import ChatEngine
from applications.collect import Collector
from applications.reload import weights_version
from applications.server import Background, create_app
from training.utils.data.sources import DataError


@pytest.fixture(scope="module")
def engine():
    return ChatEngine("tiny", template="plain")


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_answers_and_thumbs_are_recorded(tmp_path, engine):
    import httpx
    from openai import OpenAI

    collect = Collector(str(tmp_path / "c"))
    with Background(create_app(engine, collect=collect)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="none")
        ask = [{"role": "user", "content": "What is 2 + 3?"}]
        one = client.chat.completions.create(model="tiny", messages=ask, max_tokens=6, temperature=0)
        two = client.chat.completions.create(model="tiny", messages=ask, max_tokens=5, temperature=0.9, top_p=0.8,
                                             n=2)
        chunks = list(client.chat.completions.create(model="tiny", messages=ask, max_tokens=6, temperature=0,
                                                     stream=True))
        streamed, streamed_id = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[0].id
        assert httpx.get(url + "/health").json()["collecting"] is True
        thumbs = [(f"{one.id}:0", "up"), (f"{two.id}:1", "down")]
        for answer_id, rating in thumbs:
            r = httpx.post(url + "/v1/feedback", json={"id": answer_id, "rating": rating})
            assert r.status_code == 200 and r.json() == {"id": answer_id, "rating": rating}
        for body, status in [({"id": f"{one.id}:0", "rating": "up"}, 409),
                             ({"id": "chatcmpl-x:0", "rating": "up"}, 404),
                             ({"id": f"{two.id}:0", "rating": "meh"}, 400), ([1], 400)]:
            assert httpx.post(url + "/v1/feedback", json=body).status_code == status, body
    collect.close()
    rows = {r["id"]: r for r in _records(tmp_path / "c" / "conversations.jsonl")}
    assert set(rows) == {f"{one.id}:0", f"{two.id}:0", f"{two.id}:1", f"{streamed_id}:0"}
    first = rows[f"{one.id}:0"]
    assert first["answer"] == one.choices[0].message.content and first["messages"][-1]["content"] == "What is 2 + 3?"
    assert first["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 6}
    assert first["model"] == "tiny" and first["version"] == weights_version(engine.model)
    assert [rows[f"{two.id}:{i}"]["answer"] for i in (0, 1)] == [c.message.content for c in two.choices]
    assert rows[f"{two.id}:1"]["sampling"] == {"temperature": 0.9, "top_p": 0.8, "max_tokens": 5}
    assert rows[f"{streamed_id}:0"]["answer"] == streamed
    labels = _records(tmp_path / "c" / "feedback.jsonl")
    assert [(x["id"], x["rating"], x["label"]) for x in labels] == [(i, r, {"up": 1.0, "down": 0.0}[r])
                                                                    for i, r in thumbs]
    again = Collector(str(tmp_path / "c"))              # a restart knows what was collected and rated
    assert f"{two.id}:1" in again.answers and f"{one.id}:0" in again.rated
    with pytest.raises(DataError, match="conversations.jsonl: another process .* is writing it"):
        Collector(str(tmp_path / "c"))
    again.close()


def test_without_collect_nothing_is_written(tmp_path, engine, monkeypatch):
    import httpx

    monkeypatch.chdir(tmp_path)
    with Background(create_app(engine)) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and httpx.get(url + "/health").json()["collecting"] is False
        r = httpx.post(url + "/v1/feedback", json={"id": r.json()["id"] + ":0", "rating": "up"})
        assert r.status_code == 404 and "collection is off" in r.json()["error"]["message"]
    assert list(tmp_path.iterdir()) == []


def test_compare_queues_a_second_answer_for_labelling_without_delaying_requests(tmp_path, engine):
    """--compare: after a served answer, a second one (temperature 0.7) generated when no request waits is queued
    as a pair on the labelling page; its verdict is a human label stage 2 reads."""
    import time

    import httpx

    from training.utils.labels.human import read_human_labels

    collect = Collector(str(tmp_path / "c"), compare=True)
    with Background(create_app(engine, collect=collect, labels=collect.labels)) as url:
        served = []
        for q in ("Name a colour.", "Name an animal.", "Name a city."):
            r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": q}],
                                                                "max_tokens": 8, "temperature": 0})
            served.append((r.json()["id"] + ":0", r.json()["choices"][0]["message"]["content"]))
        t0 = time.time()
        while len(_records(tmp_path / "c" / "comparisons.jsonl") if (tmp_path / "c" / "comparisons.jsonl").exists()
                  else []) < 2 and time.time() - t0 < 60:
            time.sleep(0.1)
        pairs = _records(tmp_path / "c" / "comparisons.jsonl")
        assert len(pairs) >= 2 and collect.labels.progress()["total"] == len(pairs)
        for p in pairs:
            answer_id = p["id"][:-2]
            assert (answer_id, p["answer_a"]) in served and p["answer_b"].strip() != p["answer_a"].strip()
            assert p["prompt"] in ("Name a colour.", "Name an animal.", "Name a city.")
        h = {"X-Label-Session": "s"}
        item = httpx.get(url + "/label/api/next", headers=h).json()
        assert item["id"] == pairs[0]["id"] and item["prompt"] == pairs[0]["prompt"]
        r = httpx.post(url + "/label/api/verdict", headers=h, json={"id": item["id"], "choice": "left"})
        assert r.status_code == 200
    collect.close()
    got, counts, _ = read_human_labels(tmp_path / "c" / "comparisons.labels.jsonl")
    assert counts["rows"] == 1 and got[0]["chosen"] in (pairs[0]["answer_a"], pairs[0]["answer_b"])


def test_idle_jobs_wait_for_the_requests_queued_meanwhile():
    import asyncio
    import threading

    from applications.chat_engine import Completion, Request, Sampling
    from applications.batcher import Batcher, _Job
    from applications.schema import Limits

    calls, gate = [], threading.Event()

    class Engine:
        def generate(self, requests, sampling):
            calls.append([r.prompt_ids[0] for r in requests])
            if len(calls) == 1:
                gate.wait(10)                   # the first batch runs while the others queue
            return [Completion("x", "stop", 1, 1) for _ in requests]

    async def main():
        loop = asyncio.get_running_loop()
        b = Batcher(Engine(), Limits(batch_wait_s=0.0))
        futs = [loop.create_future() for _ in range(3)]
        b.submit(_Job([Request([1], 4)], Sampling(greedy=True), loop, futs[0]))
        while not calls:
            await asyncio.sleep(0.01)
        assert b.submit_idle(_Job([Request([9], 4)], Sampling(temperature=0.7), loop, futs[1]))
        b.submit(_Job([Request([2], 4)], Sampling(temperature=0.5), loop, futs[2]))
        gate.set()
        await asyncio.gather(*futs)

    asyncio.run(main())
    assert calls == [[1], [2], [9]]
