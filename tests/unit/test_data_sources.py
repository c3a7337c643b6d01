import json

import pytest

from training.utils.data.format import parse_transcript, render_prompt, to_messages
from training.utils.data.sources import DataError, Keys, get_source, read_rows


def _write(path, rows, jsonl=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


PAIR = {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}


def test_jsonfile_layout_and_rows(tmp_path, monkeypatch):
    _write(tmp_path / "data" / "train.json", [PAIR] * 3, jsonl=False)
    _write(tmp_path / "data" / "eval.json", [PAIR], jsonl=False)
    monkeypatch.chdir(tmp_path)
    out = get_source("local/jsonfile", Keys()).load()
    assert len(out["train"]) == 3 and len(out["eval"]) == 1
    r = out["train"][0]
    assert r["prompt"] == [{"role": "user", "content": "Say hi."}] and r["chosen"] == "Hi!" and r["rejected"] == "No."
    out2 = get_source(f"local/jsonfile:{tmp_path / 'data'}", Keys()).load()
    assert [x["chosen"] for x in out2["train"]] == ["Hi!"] * 3


def test_jsonl_configurable_keys_and_chat_rows(tmp_path):
    p = _write(tmp_path / "x.jsonl", [{"q": "2+2?", "good": "4", "bad": "5"}])
    rows = read_rows(p, Keys(prompt="q", chosen="good", rejected="bad"))
    assert rows[0]["chosen"] == "4" and rows[0]["rejected"] == "5"
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                         {"role": "assistant", "content": "Goodbye"}], "rejected": "What?"}
    rows = read_rows(_write(tmp_path / "c.jsonl", [chat]), Keys())
    assert rows[0]["prompt"][-1] == {"role": "user", "content": "Bye"} and len(rows[0]["prompt"]) == 4
    assert rows[0]["chosen"] == "Goodbye" and rows[0]["rejected"] == "What?"
    conv = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Yo"}],
            "rejected": [{"role": "assistant", "content": "Go away"}]}
    rows = read_rows(_write(tmp_path / "v.jsonl", [conv]), Keys())
    assert rows[0]["chosen"] == "Yo" and rows[0]["rejected"] == "Go away"


@pytest.mark.parametrize("content, needle", [
    ('{"prompt": "a", "chosen": "b"}\n{"prompt": "a", "chosen": "b"\n', "row 2: bad JSON"),
    ('{"chosen": "b"}\n', "row 1: field 'prompt': missing"),
    ('{"prompt": "a", "rejected": "b"}\n', "row 1: field 'chosen': missing (the row has a rejected answer"),
    ('{"prompt": "  ", "chosen": "b"}\n', "row 1: field 'prompt': empty"),
    ('{"prompt": "a", "chosen": ""}\n', "row 1: field 'chosen': empty"),
    ('{"prompt": 5, "chosen": "b"}\n', "row 1: field 'prompt': expected a string or message list, got int"),
    ('{"prompt": "a", "chosen": ["x"]}\n', "row 1: field 'chosen[0]': expected an object"),
    ('{"prompt": "a", "chosen": "b", "rejected": 3}\n', "row 1: field 'rejected': expected a string, got int"),
    ('[1, 2]\n', "row 1: expected a JSON object, got list"),
    ('{"messages": [{"role": "system", "content": "hi"}]}\n', "row 1: field 'messages': last message must be"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}\n', "field 'messages[0].role': unknown role 'bot'"),
])
def test_malformed_rows_name_file_row_field(tmp_path, content, needle):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        read_rows(p, Keys())
    assert str(p) in str(e.value) and needle in str(e.value)


def test_malformed_json_and_encoding(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[{"prompt": "a", "chosen": "b"},\n {"prompt": }]')
    with pytest.raises(DataError, match=r"bad JSON at line 2"):
        read_rows(p, Keys())
    p.write_text('{"prompt": "a"}')
    with pytest.raises(DataError, match="expected a JSON list of rows"):
        read_rows(p, Keys())
    p.write_text('[{"prompt": "a", "chosen": "b"}, {"prompt": "c", "chosen": 7}]')
    with pytest.raises(DataError, match=r"row 2: field 'chosen': expected a string, got int"):
        read_rows(p, Keys())
    q = tmp_path / "latin.jsonl"
    q.write_bytes(b'{"prompt": "a", "chosen": "b"}\n{"prompt": "caf\xe9", "chosen": "b"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl: line 2: not valid UTF-8"):
        read_rows(q, Keys())
    e = tmp_path / "empty.jsonl"
    e.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_rows(e, Keys())


def test_unknown_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        get_source(str(tmp_path / "nope.jsonl"), Keys())
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no train.json"):
        get_source(str(tmp_path / "d"), Keys())


def test_transcript_parsing_and_rendering(tiny_tok):
    msgs = parse_transcript("\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: And 3+3?\n\nAssistant:")
    assert msgs == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "And 3+3?"}]
    assert parse_transcript("just text") is None
    assert to_messages("just text") == [{"role": "user", "content": "just text"}]
    plain = render_prompt(tiny_tok, msgs, "plain")
    assert plain == " Human: What is 2+2? Assistant: 4 Human: And 3+3? Assistant:"
    chat = render_prompt(tiny_tok, msgs, "auto")
    assert chat.endswith("<|im_start|>assistant\n") and "And 3+3?" in chat


def test_dahoas_rm_static_schema(tmp_path):
    d = tmp_path / "Dahoas" / "rm-static"
    row = {"prompt": "\n\nHuman: Hi there\n\nAssistant:", "response": " Hello", "chosen": " Hello",
           "rejected": " Go away"}
    _write(d / "train.jsonl", [row] * 4)
    _write(d / "test.jsonl", [row])
    out = get_source(str(d), Keys()).load()
    assert len(out["train"]) == 4 and len(out["eval"]) == 1
    assert out["train"][0]["prompt"] == [{"role": "user", "content": "Hi there"}]
    assert out["train"][0]["chosen"] == " Hello" and out["train"][0]["rejected"] == " Go away"


def test_webgpt_schema_picks_higher_score_and_skips_ties(tmp_path):
    d = tmp_path / "openai" / "webgpt_comparisons"
    rows = [{"question": {"full_text": "Why is the sky blue?"}, "answer_0": "Rayleigh [1] scattering.",
             "answer_1": "Magic.", "score_0": 1.0, "score_1": -1.0},
            {"question": {"full_text": "Q2"}, "answer_0": "a", "answer_1": "b", "score_0": -1.0, "score_1": 1.0},
            {"question": {"full_text": "Q3"}, "answer_0": "a", "answer_1": "b", "score_0": 0.0, "score_1": 0.0}]
    _write(d / "train.jsonl", rows)
    out = get_source(str(d), Keys()).load()
    assert out["eval"] is None and len(out["train"]) == 2
    assert out["train"][0]["chosen"] == "Rayleigh scattering." and out["train"][0]["rejected"] == "Magic."
    assert out["train"][1]["chosen"] == "b"


def test_shp_and_yitingxie_and_gptj_schemas(tmp_path):
    shp = tmp_path / "stanfordnlp" / "SHP"
    _write(shp / "train.jsonl", [{"history": "Best pet?", "human_ref_A": "Cats", "human_ref_B": "Rocks", "labels": 1},
                                 {"history": "Best food?", "human_ref_A": "Mud", "human_ref_B": "Pasta", "labels": 0}])
    _write(shp / "validation.jsonl", [{"history": "x?", "human_ref_A": "y", "human_ref_B": "z", "labels": 1}])
    out = get_source(str(shp), Keys()).load()
    assert [r["chosen"] for r in out["train"]] == ["Cats", "Pasta"] and len(out["eval"]) == 1
    yx = tmp_path / "yitingxie" / "rlhf-reward-datasets"
    _write(yx / "train.jsonl", [{"prompt": "Human: hi Assistant:", "chosen": "Human: hi Assistant: hello",
                                 "rejected": "Human: hi Assistant: bye"}])
    _write(yx / "test.jsonl", [{"prompt": "Human: a Assistant:", "chosen": "Assistant: b", "rejected": "Assistant: c"}])
    out = get_source(str(yx), Keys()).load()
    assert out["train"][0]["chosen"].strip() == "hello" and out["train"][0]["rejected"].strip() == "bye"
    gj = tmp_path / "Dahoas" / "synthetic-instruct-gptj-pairwise"
    _write(gj / "train.jsonl", [{"prompt": "Name a color", "chosen": "Red", "rejected": "Table"}])
    out = get_source(str(gj), Keys()).load()
    assert out["eval"] is None and out["train"][0]["prompt"] == [{"role": "user", "content": "Name a color"}]


def test_hub_schema_missing_field_is_named(tmp_path):
    d = tmp_path / "Dahoas" / "full-hh-rlhf"
    _write(d / "train.jsonl", [{"prompt": "\n\nHuman: a\n\nAssistant:", "chosen": " b"}])
    with pytest.raises(DataError, match=r"row 1: field 'rejected': missing"):
        get_source(str(d), Keys()).load()


def test_prompt_only_rows_keep_their_other_columns(tmp_path):
    rows = [{"prompt": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5", "level": 1},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             "tags": ["a", "b"]}]
    got = read_rows(_write(tmp_path / "p.jsonl", rows), Keys())
    assert got[0]["chosen"] is None and got[0]["_columns"] == {"answer": "2 + 3 = 5\n#### 5", "level": 1}
    assert got[1]["prompt"][-1] == {"role": "user", "content": "Hi"} and got[1]["_columns"] == {"tags": ["a", "b"]}
    assert "_columns" not in read_rows(_write(tmp_path / "q.jsonl", [{"prompt": "a", "chosen": "b"}]), Keys())[0]


def test_parquet_and_saved_datasets_read_as_jsonl(tmp_path):
    import datasets

    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(3)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "saved"))
    pq = get_source(str(tmp_path / "p.parquet"), Keys()).load()
    assert [r["_columns"]["answer"] for r in pq["train"]] == ["0", "1", "2"] and pq["eval"] is None
    saved = get_source(str(tmp_path / "saved"), Keys()).load()
    assert len(saved["train"]) == 3 and [r["prompt"][-1]["content"] for r in saved["eval"]] == ["q0"]
    bad = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([{"question": "q"}]).to_parquet(str(bad))
    with pytest.raises(DataError, match=r"bad.parquet \[train\]: row 1: field 'prompt': missing"):
        get_source(str(bad), Keys()).load()
