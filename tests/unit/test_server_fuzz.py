"""Property-based test of the chat-completions request body: a few hundred generated bodies, valid
and invalid, get a 2xx or a 4xx in OpenAI's error form, never a 5xx, and the server's greedy answer
is the same before and after them."""


import math

import pytest
from support.server_fuzz import GREEDY, _post


@pytest.mark.parametrize("field, value", [("temperature", math.nan), ("temperature", math.inf), ("top_p", math.nan),
                                          ("top_p", -math.inf), ("max_tokens", math.inf)])
def test_non_finite_numbers_are_400_naming_the_field(fuzz_client, field, value):
    r = _post(fuzz_client, {**GREEDY, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_the_openapi_schema_describes_the_request_and_its_ranges(fuzz_client):
    spec = fuzz_client.get("/openapi.json").json()
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
