"""API keys: 401 without or with a wrong key on /v1, 200 with a right one (any of several, named), key
files read with file/line errors, and a non-loopback binding refused without a key."""

import pytest
from fastapi.testclient import TestClient

from applications.auth import AuthError, Keys, read_key_file, refuse_open_binding
from applications.chat_engine import ChatEngine
from applications.server import create_app, serve

BODY = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def engine():
    return ChatEngine("tiny", template="plain")


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine, keys=Keys({"ana": "key-of-ana-123", "bo": "key-of-bo-4567"})))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-000"},
        {"Authorization": "key-of-ana-123"},
        {"Authorization": "Basic key-of-ana-123"},
        {"Authorization": "Bearer key-of-ana-12"},
    ],
)
def test_v1_without_the_right_bearer_key_is_401_in_openai_form(client, headers):
    for r in (
        client.get("/v1/models", headers=headers),
        client.post("/v1/chat/completions", json=BODY, headers=headers),
    ):
        assert r.status_code == 401
        assert r.json()["error"]["message"].startswith("missing or wrong API key")
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_every_listed_key_opens_v1_and_health_and_page_stay_open(client):
    plain = TestClient(create_app(client.app.state.batcher.engine)).post("/v1/chat/completions", json=BODY).json()
    for key in ("key-of-ana-123", "key-of-bo-4567"):
        r = client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"] == plain["choices"][0]["message"]
        assert client.get("/v1/models", headers={"authorization": f"bearer {key}"}).json()["data"][0]["id"] == "tiny"
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    assert client.app.openapi()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_keys_gathered_from_flags_environment_and_file(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# people who label\nana  key-of-ana-123\n\nkey-without-a-name\n")
    assert read_key_file(str(f)) == {"ana": "key-of-ana-123", "key2": "key-without-a-name"}
    k = Keys.gather(["flag-key-0001"], str(f), env={"SPEEDCHAT_API_KEY": "env-key-0001, env-key-0002"})
    assert k.named == {"ana": "key-of-ana-123", "key2": "key-without-a-name", "key3": "flag-key-0001",
                       "key4": "env-key-0001", "key5": "env-key-0002"}
    assert k.who("Bearer env-key-0002") == "key5" and k.who("Bearer env-key-000") is None and k.who(None) is None
    assert not Keys.gather([], None, env={})


@pytest.mark.parametrize("text, words", [
    ("ana key-of-ana-123 extra\n", "keys.txt: line 1: expected 'NAME KEY' or 'KEY', got 3 fields"),
    ("ana short\n", "keys.txt: line 1: an API key must be at least 8 characters"),
    ("ana key-of-ana-123\nana key-of-ana-456\n", "keys.txt: line 2: the name 'ana' is given twice"),
    ("ana key-of-ana-123\nbo key-of-ana-123\n", "keys.txt: line 2: this key is already given"),
    ("# nothing\n", "no key in the file"),
])
def test_bad_key_files_name_the_file_and_line(tmp_path, text, words):
    f = tmp_path / "keys.txt"
    f.write_text(text)
    with pytest.raises(AuthError) as e:
        read_key_file(str(f))
    assert words in str(e.value)


def test_a_non_loopback_host_without_a_key_is_refused_before_binding(engine):
    with pytest.raises(AuthError, match="--host 0.0.0.0 is reachable from other machines"):
        serve(engine, host="0.0.0.0", port=1)      # refused before uvicorn: port 1 is never bound
    refuse_open_binding("0.0.0.0", Keys({}), no_auth=True)
    refuse_open_binding("0.0.0.0", Keys({"a": "key-of-ana-123"}), no_auth=False)
    refuse_open_binding("127.0.0.1", Keys({}), no_auth=False)


def test_the_openai_client_with_api_key_gets_answers_and_without_it_an_authentication_error(engine):
    import openai

    from applications.server import Background

    with Background(create_app(engine, keys=Keys({"ana": "key-of-ana-123"}))) as url:
        good = openai.OpenAI(base_url=url + "/v1", api_key="key-of-ana-123", max_retries=0)
        r = good.chat.completions.create(model="tiny", messages=BODY["messages"], max_tokens=4, temperature=0)
        assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens >= 1
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong-key-000", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            bad.chat.completions.create(model="tiny", messages=BODY["messages"], max_tokens=4)
