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
