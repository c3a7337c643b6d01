"""Property-based test of the chat-completions request body: a few hundred generated bodies, valid
and invalid, get a 2xx or a 4xx in OpenAI's error form, never a 5xx, and the server's greedy answer
is the same before and after them."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.server_fuzz import GREEDY, _post

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


@pytest.mark.slow
def test_generated_bodies_get_2xx_or_4xx_and_greedy_answers_do_not_change(fuzz_client):
    before = _post(fuzz_client, GREEDY).json()["choices"][0]["message"]["content"]
    seen = {"2xx": 0, "4xx": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(bodies)
    def post(body):
        r = _post(fuzz_client, body)
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
    assert _post(fuzz_client, GREEDY).json()["choices"][0]["message"]["content"] == before
