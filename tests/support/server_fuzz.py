"""Helpers shared by the server_fuzz tests of several kinds."""
import json

GREEDY = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 6, "temperature": 0}


def _post(client, body):
    text = json.dumps(body, allow_nan=True)     # NaN / Infinity as Python's json writes them: a client may
    return client.post("/v1/chat/completions", content=text, headers={"content-type": "application/json"})
