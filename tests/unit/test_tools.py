"""Tools: the calculator, schemas from functions, the call parser, every kind of tool failure, and
prompts rendered with tools by two chat templates."""

import json
import time

import pytest
from support.tools import QWEN_TEMPLATE

from training.utils.tools import render
from training.utils.tools.calculator import CalculatorError, calculator
from training.utils.tools.environment import EnvError, ToolEnvironment, as_step, load_environment
from training.utils.tools.executor import ToolExecutor
from training.utils.tools.parsers import Call, get_parser, hermes
from training.utils.tools.spec import ToolError, load_tools

TOOLS_PY = '''
import time


def sleepy(seconds: float) -> str:
    """Sleep, then say so.

    Args:
        seconds: How long to sleep.
    """
    time.sleep(seconds)
    return f"slept {seconds}"


def boom(x: int) -> str:
    """Always fails.

    Args:
        x: Any number.
    """
    raise RuntimeError(f"boom {x}")


def shout(text: str) -> str:
    """Upper-cases a text.

    Args:
        text: The text.
    """
    return text.upper()


def no_doc(x):
    return x
'''




@pytest.fixture()
def user_tools(tmp_path, monkeypatch):
    (tmp_path / "mytools.py").write_text(TOOLS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return load_tools(["calculator,mytools:sleepy", "mytools:boom", "mytools:shout"])


@pytest.fixture()
def qwen_tok():
    from training.utils.model import load_tokenizer

    tok = load_tokenizer("tiny")
    tok.chat_template = QWEN_TEMPLATE
    return tok


@pytest.mark.parametrize("expr, want", [("(17 + 25) * 3", "126"), ("7 / 2", "3.5"), ("2 ** 10", "1024"),
                                        ("-3 + 4", "1"), ("10 // 3", "3"), ("10 % 4", "2"), ("1.5 * 2", "3"),
                                        ("123456789 * 987654321", "121932631112635269")])
def test_calculator_values(expr, want):
    assert calculator(expr) == want


@pytest.mark.parametrize("expr, why", [
    ("__import__('os').system('true')", "found Call"), ("x + 1", "found Name"), ("'a' * 3", "found Constant"),
    ("9 ** 9 ** 9", "exponent 387420489 is over 64"), ("1 / 0", "division by zero"), ("(1 +", "not an arithmetic"),
    ("2 ** 60 * 2 ** 60 * 2 ** 60 * 2 ** 60 * 2 ** 60 * 2 ** 60", r"a result over 10\^100"),
    ("1" * 201, "over 200"), ("[1, 2]", "found List"), ("1 if 2 else 3", "found IfExp"), ("1 < 2", "found Compare")])
def test_calculator_refuses_everything_else(expr, why):
    with pytest.raises(CalculatorError, match=why):
        calculator(expr)


def test_schema_from_type_hints_and_docstring(user_tools):
    by = {t.name: t for t in user_tools}
    assert list(by) == ["calculator", "sleepy", "boom", "shout"]
    assert by["sleepy"].schema == {
        "type": "function",
        "function": {
            "name": "sleepy",
            "description": "Sleep, then say so.",
            "parameters": {
                "type": "object",
                "properties": {"seconds": {"type": "number", "description": "How long to sleep."}},
                "required": ["seconds"],
            },
        },
    }
    assert by["calculator"].target == "training.utils.tools.calculator:calculator"


def test_bad_tool_specs_name_the_flag(user_tools):
    with pytest.raises(ToolError, match=r"--tools: 'mytools:no_doc': no JSON schema"):
        load_tools(["mytools:no_doc"])
    with pytest.raises(ToolError, match=r"--tools: 'nosuchmodule:f': cannot import"):
        load_tools(["nosuchmodule:f"])
    with pytest.raises(ToolError, match=r"neither a bundled tool \(calculator\) nor module:function"):
        load_tools(["abacus"])
    with pytest.raises(ToolError, match="two tools are named shout"):
        load_tools(["mytools:shout", "mytools:shout"])


def test_hermes_parser_reads_calls_and_marks_malformed_ones():
    p = hermes('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>')
    assert p.content == "Let me compute." and len(p.calls) == 1
    assert (p.calls[0].name, p.calls[0].arguments, p.calls[0].error) == ("calculator", {"expression": "2+2"}, "")
    two = hermes('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", '
                 '"arguments": "{\\"x\\": 1}"}</tool_call>')
    assert [(c.name, c.arguments) for c in two.calls] == [("a", {}), ("b", {"x": 1})]
    assert hermes("no call here").calls == []
    cases = {
        '<tool_call>{"name": "a", "arguments": {"x": 1}': "not valid JSON",  # unclosed: to the end
        "<tool_call>{bad}</tool_call>": "not valid JSON",
        "<tool_call>[1]</tool_call>": "a JSON list, not an object",
        '<tool_call>{"arguments": {}}</tool_call>': 'no "name"',
        '<tool_call>{"name": "a", "arguments": [1]}</tool_call>': "a JSON list, not an object",
        '<tool_call>{"name": "a", "arguments": "nope"}</tool_call>': "a string that is not JSON",
    }
    for text, why in cases.items():
        calls = hermes(text).calls
        assert len(calls) == 1 and why in calls[0].error, (text, calls)
    assert get_parser("hermes") is hermes
    with pytest.raises(ValueError, match=r"--tool_parser: no tool-call parser .xml.; registered: hermes \(or give"):
        get_parser("xml")


@pytest.mark.parametrize("workers", [0, 2])
def test_every_failure_becomes_a_tool_message(user_tools, workers):
    ex = ToolExecutor(user_tools, timeout=1.0, workers=workers, truncate=lambda s: s[:12])
    try:
        t0 = time.monotonic()
        out = ex.run([Call("calculator", {"expression": "6*7"}), Call("sleepy", {"seconds": 30}),
                      Call("boom", {"x": 3}), Call("abacus", {}), Call("calculator", {"expr": "1"}),
                      Call(error="the call is not valid JSON"), Call("shout", {"text": "a" * 40})])
        took = time.monotonic() - t0
        assert [r.status for r in out] == ["ok", "timeout", "error", "unknown_tool", "bad_arguments", "malformed", "ok"]
        assert out[0].message() == {"role": "tool", "name": "calculator", "content": "42"}
        assert out[1].content == "Error: sleepy took longer than 1 s"
        assert out[2].content == "Error: Runti"                # cut to 12 characters by the truncator
        assert out[3].content == "Error: unknown tool 'abacus'; the tools are boom, calculator, shout, sleepy"
        assert out[4].content == "Error: bad arguments for calculator: missing a required argument: 'expression'"
        assert out[5].content == "Error: the call is not valid JSON"
        assert out[6].content == "A" * 12
        assert took < 5, took                                   # the 30 s call cost its 1 s timeout only
        # a killed worker is replaced: the next call runs
        assert ex.run([Call("sleepy", {"seconds": 0.01})])[0].content == "slept 0.01"
        if workers:           # calls of many rows run side by side: 2 x 0.6 s in about 0.6 s
            t0 = time.monotonic()
            res = ex.run_many([[Call("sleepy", {"seconds": 0.6})], [Call("sleepy", {"seconds": 0.6})]])
            assert [r[0].status for r in res] == ["ok", "ok"] and time.monotonic() - t0 < 1.1
    finally:
        ex.close()


def test_tool_environment_step_and_the_step_contract(user_tools):
    env = ToolEnvironment(ToolExecutor(user_tools), hermes)
    conv = env.reset({"messages": [{"role": "user", "content": "6 times 7?"}], "answer": 42})
    assert conv == [{"role": "user", "content": "6 times 7?"}]
    st = env.step(conv + [{"role": "assistant", "content":
                           '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'}])
    assert not st.done and st.observations == [{"role": "tool", "name": "calculator", "content": "42"}]
    assert st.calls == [{"name": "calculator", "arguments": {"expression": "6*7"}, "status": "ok", "content": "42"}]
    final = env.step(conv + [{"role": "assistant", "content": "42"}])
    assert final.done and final.observations == [] and final.calls == []
    assert as_step(([{"role": "user", "content": "again"}], False, 0.5), "E").reward == 0.5
    with pytest.raises(EnvError, match=r"E.step must return \(observations, done\)"):
        as_step("nope", "E")
    with pytest.raises(EnvError, match="observations must be a list of"):
        as_step(([{"text": "x"}], True), "E")
    with pytest.raises(EnvError, match="reward must be a number or None"):
        as_step(([], True, "high"), "E")
    with pytest.raises(EnvError, match=r"--environment: 'json:loads' has no reset\(\) method"):
        load_environment("json:loads")


def test_prompts_with_tools_in_both_kinds_of_template(tiny_tok, qwen_tok, user_tools):
    schemas = [t.schema for t in user_tools[:1]]
    msgs = [{"role": "user", "content": "What is 17*23?"}]
    assert not render.template_has_tools(tiny_tok) and render.template_has_tools(qwen_tok)
    # SmolLM2's template has no tools section: a default system message carries them
    text = render.render(tiny_tok, msgs, schemas, True)
    assert text == ("<|im_start|>system\n" + render.tools_system_text(schemas) + "<|im_end|>\n"
                    "<|im_start|>user\nWhat is 17*23?<|im_end|>\n<|im_start|>assistant\n")
    assert json.dumps(schemas[0]) in text and "<tool_call>" in text
    # a system message of the row's own is kept, the tools after it
    own = render.render(tiny_tok, [{"role": "system", "content": "Be brief."}, *msgs], schemas, True)
    assert own.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    # Qwen's template renders the tools itself
    q = render.render(qwen_tok, msgs, schemas, True)
    assert q.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n"
    ) and q.endswith("<|im_start|>user\nWhat is 17*23?<|im_end|>\n<|im_start|>assistant\n")
    # between turns: exactly the template's tokens after the model's EOS
    conv = msgs + [{"role": "assistant", "content": "<tool_call>...</tool_call>"}]
    obs = [{"role": "tool", "name": "calculator", "content": "391"}]
    assert tiny_tok.decode(render.continuation_ids(tiny_tok, conv, obs, schemas)) == \
        "\n<|im_start|>tool\n391<|im_end|>\n<|im_start|>assistant\n"
    assert qwen_tok.decode(render.continuation_ids(qwen_tok, conv, obs, schemas)) == \
        "\n<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(render.TemplateError, match="has no chat template"):
        tok = type("T", (), {"chat_template": None, "name_or_path": "plain"})()
        render.with_tools(tok, msgs, schemas)


def test_bundled_tools_rows_teach_the_call_then_the_answer(tiny_tok, tmp_path):
    from training.utils.arguments import parse_config
    from training.utils.data import build_phase
    from training.utils.data.bundled import calculator_call, calculator_turns
    from training.utils.data.checker import check

    prompt = "What is 17 * 3? Reply with the number only."
    row = {"prompt": prompt, "chosen": "51", "rejected": "50", "_src": "bundled", "_row": 4}
    call, answer = calculator_turns([row, {**row, "prompt": "Hi", "_row": 5}])[:2]
    assert (
        calculator_call(prompt)
        == '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 3"}}\n</tool_call>'
    )
    assert call == {**row, "prompt": [{"role": "user", "content": prompt}], "chosen": calculator_call(prompt)}
    assert answer["prompt"][1:] == [{"role": "assistant", "content": calculator_call(prompt)},
                                    {"role": "tool", "content": "51"}]
    assert answer["chosen"] == "51" and check(prompt, answer["chosen"]) and calculator_call("Hi") is None

    schemas = tuple(t.schema for t in load_tools(["calculator"]))
    args = ["--data_path", "bundled-tools", "--bundled_size", "180", "--data_output_path", str(tmp_path),
            "--max_seq_len", "512", "--max_prompt_seq_len", "448", "--data_split", "1,0,1"]
    d = parse_config(args, stage="sft").data
    plain, _, _, _ = build_phase(parse_config(args[:1] + ["bundled"] + args[2:], stage="sft").data, tiny_tok, 1, 0)
    tooled, _, stats, _ = build_phase(d, tiny_tok, 1, 0, tools=schemas)
    math = [r for r in plain if "<|im_start|>user\n" in (t := tiny_tok.decode(r["input_ids"])) and
            calculator_call(t.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]) is not None]
    assert len(tooled) == len(plain) + len(math) > len(plain) and stats["train"]["prompt_truncated"] == 0
    texts = [tiny_tok.decode(r["input_ids"]) for r in tooled]
    assert all(t.startswith("<|im_start|>system\n" + render.tools_system_text(list(schemas))) for t in texts)
    calls = [t for t in texts if t.endswith("</tool_call><|im_end|>")]
    answers = [t for t in texts if "<|im_start|>tool\n" in t]
    assert len(calls) == len(answers) == len(math)
    # the answer row: the call, the tool's result, then the number, trained on the number only
    r = tooled[texts.index(answers[0])]
    tail = tiny_tok.decode(r["input_ids"][r["prompt_len"]:])
    result = answers[0].split("<|im_start|>tool\n")[1].split("<|im_end|>")[0]
    assert tail == result + "<|im_end|>"
    # stage 3 on the same source: the plain prompts
    p3, _, _, _ = build_phase(parse_config(args, stage="rl").data, tiny_tok, 3, 0)
    p3_plain, _, _, _ = build_phase(parse_config(args[:1] + ["bundled"] + args[2:], stage="rl").data, tiny_tok, 3, 0)
    assert p3["prompt_text"] == p3_plain["prompt_text"]
