"""Tool calling through the server with the real ``openai`` client: tools in, tool_calls out (streamed and
not), the tool's result back in, forced calls, and 400s that name the field of a bad tool schema."""

import json

import httpx
import pytest
from support.server_tools import CALL, Scripted

from applications.server import Background, create_app

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}






@pytest.fixture(scope="module")
def served():
    engine = Scripted()
    with Background(create_app(engine)) as url:
        yield engine, url


def test_tools_in_tool_calls_out_then_the_result_back_in(served):
    from openai import OpenAI

    engine, url = served
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # the model saw the tool's schema (SmolLM2's template has no tools section: the default system message)
    assert json.dumps(WEATHER) in engine.prompts[-1] and "<tool_call>" in engine.prompts[-1]
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    r2 = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content == "It is sunny in Paris."
    assert r2.choices[0].message.tool_calls is None
    # the earlier call was rendered as the model writes it, the result as a tool turn named after it
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n" + CALL + "<|im_end|>\n<|im_start|>tool\n"
                                       "sunny, 21 C<|im_end|>\n<|im_start|>assistant\n")


def test_streamed_tool_calls_assemble_as_the_client_expects(served):
    from openai import OpenAI

    _, url = served
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Weather?"}],
                                            tools=[WEATHER], stream=True)
    calls, finish, content = {}, None, ""
    for chunk in stream:
        d = chunk.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
            c["name"] += tc.function.name or ""
            c["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", {"city": "Paris"})]


def test_tool_choice_none_and_named(served):
    from openai import OpenAI

    engine, url = served
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    msgs = [{"role": "user", "content": "Weather?"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER], tool_choice="none")
    # no tools shown, no calls parsed: the script's text comes back as content
    assert r.choices[0].message.content == CALL and r.choices[0].finish_reason == "stop"
    assert "get_weather" not in engine.prompts[-1]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    # the answer was started with the call's opening, and the model wrote its remainder
    assert engine.prompts[-1].endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ')
    assert (
        r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.tool_calls[0].function.name == "get_weather"
    )


@pytest.mark.parametrize("change, status, words", [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, 400, "tools.0.function.name"),
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, 400, "tools.0.type"),
    ({"tools": [{"type": "function"}]}, 400, "tools.0.function: Field required"),
    ({"tool_choice": "required"}, 400, "the request has no tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, 400, "'other'"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, 400, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "r"}]}, 400,
     "messages.1.tool_calls.0.function.arguments"),
    ({"messages": [{"role": "user", "content": None}]}, 400, "content is required")])
def test_bad_tool_requests_name_the_field(served, change, status, words):
    _, url = served
    payload = {"model": "tiny", "messages": [{"role": "user", "content": "Weather?"}], **change}
    r = httpx.post(url + "/v1/chat/completions", json=payload, timeout=30)
    assert r.status_code == status and words in r.json()["error"]["message"], r.json()


def test_terminal_chat_runs_the_tools_itself():
    """The terminal chat with --tools: the model's call is run, its result shown to the model, the answer follows."""
    from applications.chat_engine import Sampling
    from applications.cli import Chat
    from training.utils.tools.environment import ToolEnvironment
    from training.utils.tools.executor import ToolExecutor
    from training.utils.tools.parsers import hermes
    from training.utils.tools.spec import load_tools

    engine = Scripted('<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>')
    tools = ToolEnvironment(ToolExecutor(load_tools(["calculator"])), hermes)
    chat = Chat(engine, 32, Sampling(greedy=True), tools=tools)
    out = []
    assert chat.turn("What is 6 * 7?", out.append) == "It is sunny in Paris."
    assert '[calculator({"expression": "6 * 7"}) ok: 42]\n' in out
    assert [m["role"] for m in chat.history] == ["user", "assistant", "tool", "assistant"]
    assert chat.history[2] == {"role": "tool", "name": "calculator", "content": "42"}
    assert "calculator" in engine.prompts[0] and engine.prompts[1].endswith(
        "<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")


def test_the_servers_tools_endpoints(served):
    from fastapi.testclient import TestClient

    from training.utils.tools.environment import ToolEnvironment
    from training.utils.tools.executor import ToolExecutor
    from training.utils.tools.parsers import hermes
    from training.utils.tools.spec import load_tools

    engine, url = served
    assert httpx.get(url + "/v1/tools").json() == {"tools": [], "max_turns": 4}
    r = httpx.post(url + "/v1/tools/run", json={"name": "calculator", "arguments": "{}"})
    assert r.status_code == 404 and "--tools" in r.json()["error"]["message"]
    tools = ToolEnvironment(ToolExecutor(load_tools(["calculator"])), hermes)
    client = TestClient(create_app(engine, tools=tools, max_turns=2))
    assert client.get("/v1/tools").json() == {"tools": tools.tools, "max_turns": 2}
    run = lambda **b: client.post("/v1/tools/run", json=b)          # noqa: E731
    assert run(name="calculator", arguments='{"expression": "2 ** 5"}').json() == \
        {"name": "calculator", "status": "ok", "content": "32"}
    assert run(name="calculator", arguments='{"expr": "1"}').json()["status"] == "bad_arguments"
    assert run(name="calculator", arguments='{"expression": "9 ** 99"}').json() == \
        {"name": "calculator", "status": "error", "content": "Error: CalculatorError: exponent 99 is over 64"}
    bad = run(name="calculator", arguments="[1]")
    assert bad.status_code == 400 and "arguments" in bad.json()["error"]["message"]
