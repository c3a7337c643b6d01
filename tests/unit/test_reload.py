"""Swapping the served model: the admin key alone may reload, the version is the new weights' hash and the greedy
answers are the new model's, and a broken or mismatched directory is refused while the old model keeps serving."""

import functools

import pytest
from fastapi.testclient import TestClient

from applications.auth import Keys
from applications.chat_engine import ChatEngine, Sampling
from applications.reload import Served, weights_version
from applications.server import create_app

ADMIN = "admin-key-0123456789"
ASK = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8, "temperature": 0}


def _saved(path, seed=5, extra_token="", template=None):
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer("tiny")
    load_causal_lm("tiny", tok, seed=seed).save_pretrained(path)
    if extra_token:
        tok.add_tokens([extra_token])
    if template is not None:
        tok.chat_template = template
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture()
def served():
    make = functools.partial(ChatEngine, template="plain")
    return Served(make("tiny"), make, ADMIN)


def test_the_admin_key_reloads_and_the_answers_are_the_new_weights(served, tmp_path):
    client = TestClient(create_app(served, keys=Keys({"ana": "api-key-of-ana-1"})))
    api = {"Authorization": "Bearer api-key-of-ana-1"}
    before = client.get("/v1/models", headers=api).json()["data"][0]
    assert before["id"] == "tiny" and before["version"] == weights_version(served.engine.model)
    old_answer = client.post("/v1/chat/completions", headers=api, json=ASK).json()["choices"][0]["message"]
    new_dir = _saved(tmp_path / "new")
    assert client.post("/admin/reload", json={"model": new_dir}).status_code == 401
    assert client.post("/admin/reload", headers=api, json={"model": new_dir}).status_code == 401   # an API key
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, json={"model": new_dir})
    assert r.status_code == 200, r.text
    offline = ChatEngine(new_dir, template="plain")
    assert r.json() == {"id": "tiny", "version": weights_version(offline.model), "path": new_dir,
                        "previous": before["version"]}
    assert r.json()["version"] != before["version"]
    after = client.get("/v1/models", headers=api).json()["data"][0]
    assert after["version"] == r.json()["version"] and after["id"] == "tiny"     # clients keep the name
    got = client.post("/v1/chat/completions", headers=api, json={**ASK, "model": "tiny"}).json()
    want = offline.reply(ASK["messages"], 8, Sampling(greedy=True))
    assert got["choices"][0]["message"]["content"] == want.text != old_answer["content"]


def test_a_broken_or_mismatched_directory_is_refused_and_the_old_model_keeps_serving(served, tmp_path):
    client = TestClient(create_app(served))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    version = client.get("/v1/models").json()["data"][0]["version"]
    answer = client.post("/v1/chat/completions", json=ASK).json()["choices"][0]["message"]["content"]
    broken = tmp_path / "broken"
    _saved(broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    cases = [({"model": str(tmp_path / "nowhere")}, "nowhere: not a model directory (no config.json)"),
             ({"model": str(broken)}, "broken: does not load ("),
             ({"model": _saved(tmp_path / "vocab", extra_token="<zz>")}, "its tokenizer's vocabulary differs"),
             ({"model": _saved(tmp_path / "tmpl", template="{{ messages }}")}, "its chat template differs"),
             ({"nothing": 1}, 'body must be {"model": DIR}'),
             ([1], 'body must be {"model": DIR}')]
    for body, words in cases:
        r = client.post("/admin/reload", headers=admin, json=body)
        assert r.status_code == 400 and words in r.json()["error"]["message"], (body, r.text)
        assert "the served model is unchanged" in r.json()["error"]["message"] or "body" in words
    assert client.get("/v1/models").json()["data"][0]["version"] == version
    assert client.post("/v1/chat/completions", json=ASK).json()["choices"][0]["message"]["content"] == answer


def test_without_an_admin_key_reloading_is_off(tmp_path):
    client = TestClient(create_app(ChatEngine("tiny", template="plain")))
    r = client.post("/admin/reload", json={"model": str(tmp_path)})
    assert r.status_code == 403 and "--admin-key-file" in r.json()["error"]["message"]
