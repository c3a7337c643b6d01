"""Property-based test of the chat-completions request body: a few hundred generated bodies, valid
and invalid, get a 2xx or a 4xx in OpenAI's error form, never a 5xx, and the server's greedy answer
is the same before and after them."""
import json
import math

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from applications.chat_engine import ChatEngine
from applications.server import Limits, create_app

GREEDY = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 6, "temperature": 0}

numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**20, 10**20)
           | st.floats(min_value=0, max_value=2) | st.floats(min_value=0, max_value=1e-30))
junk = st.none() | st.booleans() | st.text(max_size=12) | st.lists(st.integers(), max_size=3) | st.dictionaries(
    st.text(max_size=4), st.integers(), max_size=2)
content = (
    st.text(max_size=40)
    | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2)
    | junk
)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | junk,
                                 "content": content})
fields = {
    "messages": st.lists(message, max_size=3) | junk,
    "max_tokens": st.integers(-2, 8) | numbers | junk,
    "max_completion_tokens": st.integers(-2, 8) | junk,
    "temperature": numbers | junk,
    "top_p": numbers | junk,
    "n": st.integers(-1, 5) | junk,
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=3), max_size=6) | junk,
    "stream": st.booleans() | junk,
    "model": st.sampled_from(["tiny", "other", ""]) | junk,
}
valid = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                                 "content": st.text(max_size=30)}), max_size=2).map(
        lambda m: m + [{"role": "user", "content": "Say hi"}])},
    optional={"max_tokens": st.integers(1, 8), "temperature": st.floats(0, 2), "top_p": st.floats(1e-12, 1),
              "n": st.integers(1, 3), "stop": st.text(min_size=1, max_size=3), "stream": st.booleans(),
              "model": st.just("tiny")})
bodies = valid | st.fixed_dictionaries({}, optional=fields) | junk


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(ChatEngine("tiny", template="plain"), Limits(max_tokens=8, max_n=3)))


def _post(client, body):
    text = json.dumps(body, allow_nan=True)     # NaN / Infinity as Python's json writes them: a client may
    return client.post("/v1/chat/completions", content=text, headers={"content-type": "application/json"})


@pytest.mark.slow
def test_generated_bodies_get_2xx_or_4xx_and_greedy_answers_do_not_change(client):
    before = _post(client, GREEDY).json()["choices"][0]["message"]["content"]
    seen = {"2xx": 0, "4xx": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(bodies)
    def post(body):
        r = _post(client, body)
        assert r.status_code < 500, (body, r.status_code, r.text[:300])
        if r.status_code >= 400:
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["message"]
            seen["4xx"] += 1
        else:
            seen["2xx"] += 1
            if body.get("stream") is True:
                assert r.text.rstrip().endswith("data: [DONE]")
            else:
                choices = r.json()["choices"]
                assert len(choices) == body.get("n", 1)
    post()
    assert seen["2xx"] >= 20 and seen["4xx"] >= 100, seen         # both kinds of body were really tried
    assert _post(client, GREEDY).json()["choices"][0]["message"]["content"] == before


@pytest.mark.parametrize("field, value", [("temperature", math.nan), ("temperature", math.inf), ("top_p", math.nan),
                                          ("top_p", -math.inf), ("max_tokens", math.inf)])
def test_non_finite_numbers_are_400_naming_the_field(client, field, value):
    r = _post(client, {**GREEDY, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_the_openapi_schema_describes_the_request_and_its_ranges(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = body["properties"]
    assert body["required"] == ["messages"] and props["messages"]["minItems"] == 1
    assert props["messages"]["items"]["$ref"] == "#/components/schemas/Message"
    schemas = spec["components"]["schemas"]
    assert schemas["Message"]["properties"]["role"]["enum"] == ["system", "user", "assistant", "tool"]
    assert schemas["Function"]["properties"]["name"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert props["tools"]["anyOf"][0]["items"]["$ref"] == "#/components/schemas/Tool"
    assert props["temperature"]["minimum"] == 0 and props["temperature"]["maximum"] == 2
    assert props["top_p"]["exclusiveMinimum"] == 0 and props["top_p"]["maximum"] == 1
