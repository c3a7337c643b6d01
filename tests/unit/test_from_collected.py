"""Training on what a server collected: its prompts as stage 3's (``collected:DIR``, mixed in at ``--rl_only_mix``),
its thumbs and verdicts as stage 2's labels (``human:DIR``), and ``train.py --from-collected`` writing a new version
folder."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from launch.plan import Plan, collected_version
from training.utils.config import ConfigError, DataConfig
from training.utils.data.pipeline import collect_rows, mix_in
from training.utils.data.sources import DataError, Keys, get_source
from training.utils.labels.human import read_human_labels



def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture()
def col(tmp_path):
    d = tmp_path / "col"
    _write(d / "conversations.jsonl", [
        {"id": "a:0", "messages": _user("Say hi."), "answer": "hi", "version": "v1"},
        {"id": "b:0", "messages": _user("Say hi."), "answer": "hello there", "version": "v1"},
        {"id": "c:0", "messages": _user("Name a fruit."), "answer": "apple", "version": "v1"},
        {"id": "d:0", "messages": [*_user("2+2?"), {"role": "assistant", "content": None, "tool_calls": [{}]},
                                   {"role": "tool", "content": "4"}], "answer": "4", "version": "v1"},
        {"id": "e:0", "messages": [*_user("Hi"), {"role": "assistant", "content": "Hello"}, *_user("Name a tree.")],
         "answer": "oak", "version": "v2"},
    ])
    return d


def test_collected_prompts_are_each_distinct_conversation_that_ends_with_a_user_turn(col, caplog):
    rows = get_source(f"collected:{col}", Keys()).load()
    assert rows["eval"] is None
    assert [r["prompt"][-1]["content"] for r in rows["train"]] == ["Say hi.", "Name a fruit.", "Name a tree."]
    assert [r["chosen"] for r in rows["train"]] == [None, None, None]          # prompts for stage 3
    assert rows["train"][2]["_columns"] == {"answer": "oak", "version": "v2"} and len(rows["train"][2]["prompt"]) == 3
    assert "1 collected conversation(s) skipped" in caplog.text


def test_a_collection_without_conversations_or_with_a_bad_record_is_named(tmp_path, col):
    with pytest.raises(DataError, match="nowhere: no conversations.jsonl"):
        get_source(f"collected:{tmp_path / 'nowhere'}", Keys())
    _write(col / "conversations.jsonl", [{"id": "a:0", "answer": "x"}])
    with pytest.raises(DataError, match=r"conversations.jsonl: row 1: expected a collected answer"):
        get_source(f"collected:{col}", Keys()).load()


def test_mix_in_repeats_the_stage_only_rows_to_their_share():
    rows, extra = list(range(30)), ["a", "b", "c", "d"]
    mixed = mix_in(rows, extra, 0.25, seed=1)      # 30 rows are 75%: 10 extra rows, 4 x 2 + 2 drawn
    assert mixed[:30] == rows and len(mixed) == 40
    tail = mixed[30:]
    assert tail[:8] == extra * 2 and len(set(tail[8:])) == 2 and set(tail[8:]) <= set(extra)
    assert mix_in(rows, extra, 0.0, 1) == rows + extra
    assert mix_in(rows, extra, 1.0, 1) == extra


def test_stage_3_trains_on_the_collected_prompts_and_the_other_stages_never_see_them(col):
    d = DataConfig(data_path=["bundled"], bundled_size=200, rl_only_data_path=[f"collected:{col}"], rl_only_mix=0.5)
    phase3 = collect_rows(d, 3, seed=0)
    texts = [r["prompt"][-1]["content"] for r in phase3["train"]]
    n_bundled = len(collect_rows(DataConfig(data_path=["bundled"], bundled_size=200), 3, seed=0)["train"])
    assert len(texts) == 2 * n_bundled and sum(t in ("Say hi.", "Name a fruit.", "Name a tree.") for t in texts) == \
        n_bundled
    assert all("Say hi." not in json.dumps(r["prompt"]) for r in phase3["eval"])
    for phase in (1, 2):
        assert all("Say hi." not in json.dumps(r["prompt"]) for r in collect_rows(d, phase, seed=0)["train"])


def test_rl_only_mix_is_checked():
    from training.utils.arguments import parse_config

    with pytest.raises(ConfigError, match=r"rl_only_mix must be in \[0, 1\]"):
        parse_config(["--rl_only_data_path", "x.jsonl", "--rl_only_mix", "1.5"], stage="rl")
    with pytest.raises(ConfigError, match="--rl_only_mix 0.5 mixes in the prompts of --rl_only_data_path"):
        parse_config(["--rl_only_mix", "0.5"], stage="rl")


def test_thumbs_are_pointwise_labels_and_an_up_and_a_down_on_one_conversation_a_pair(col):
    _write(col / "feedback.jsonl", [{"id": "d:0", "rating": "up", "label": 1.0},        # a tool turn: skipped
                                    {"id": "a:0", "rating": "up", "label": 1.0},
                                    {"id": "b:0", "rating": "down", "label": 0.0},
                                    {"id": "c:0", "rating": "down", "label": 0.0},
                                    {"id": "c:0", "rating": "up", "label": 1.0}])       # a repeated id: the first
    _write(col / "comparisons.labels.jsonl", [
        {"id": "c:0/b", "prompt": "Name a fruit.", "answer_a": "apple", "answer_b": "a rock", "preference": "a"},
        {"id": "a:0/b", "prompt": "Say hi.", "answer_a": "hi", "answer_b": "bye", "preference": "tie"}])
    pairs, counts, labels = read_human_labels(col)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("apple", "a rock"), ("hi", "hello there")]
    assert [(x["answer"], x["label"]) for x in labels] == [("hi", 1.0), ("hello there", 0.0), ("apple", 0.0)]
    assert labels[0]["prompt"] == _user("Say hi.")
    assert counts == {"rows": 2, "a": 1, "b": 0, "tie": 1, "skip": 0, "thumbs": 3, "up": 1, "down": 2,
                      "thumb_pairs": 1}


def test_a_line_the_server_is_still_writing_is_left_out_of_a_collection(col, caplog):
    with open(col / "conversations.jsonl", "a") as f:
        f.write('{"id": "f:0", "messages": [{"role": "user", "con')          # no newline yet
    _write(col / "feedback.jsonl", [{"id": "c:0", "label": 1.0}])
    with open(col / "feedback.jsonl", "a") as f:
        f.write('{"id": "a:0", "lab')
    rows = get_source(f"collected:{col}", Keys()).load()["train"]
    assert len(rows) == 3 and "conversations.jsonl: its last line has no newline yet (48 characters" in caplog.text
    pairs, counts, labels = read_human_labels(col)
    assert [(x["answer"], x["label"]) for x in labels] == [("apple", 1.0)] and counts["thumbs"] == 1


def test_a_pair_with_an_empty_answer_gives_no_pair_and_is_never_queued(col, tmp_path):
    from applications.collect import Collector

    _write(col / "comparisons.labels.jsonl", [
        {"id": "c:0/b", "prompt": "Name a fruit.", "answer_a": "apple", "answer_b": " ", "preference": "a"},
        {"id": "a:0/b", "prompt": "Say hi.", "answer_a": "hi", "answer_b": "bye", "preference": "b"}])
    _write(col / "feedback.jsonl", [{"id": "a:0", "label": 0.0}])
    _write(col / "conversations.jsonl", [*map(json.loads, (col / "conversations.jsonl").read_text().splitlines()),
                                         {"id": "g:0", "messages": _user("Say hi."), "answer": "", "version": "v1"}])
    _write(col / "feedback.jsonl", [{"id": "a:0", "label": 0.0}, {"id": "g:0", "label": 1.0}])
    pairs, counts, labels = read_human_labels(col)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("bye", "hi")] and counts["empty"] == 1
    assert counts["thumb_pairs"] == 0 and len(labels) == 2          # the empty answer keeps its thumb
    with pytest.raises(DataError, match=r"row 1: field 'answer_b': empty"):      # a people's file stays strict
        read_human_labels(col / "comparisons.labels.jsonl")
    older = tmp_path / "older"          # a pair an older server queued, and its verdict: a restart skips both
    _write(older / "comparisons.jsonl", [{"id": "e:0/b", "prompt": "Say hi.", "answer_a": "hi", "answer_b": ""},
                                         {"id": "f:0/b", "prompt": "Say hi.", "answer_a": "hi", "answer_b": "yo"}])
    _write(older / "comparisons.labels.jsonl", [{"id": "e:0/b", "prompt": "Say hi.", "answer_a": "hi",
                                                 "answer_b": "", "preference": "a"}])
    restarted = Collector(str(older), compare=True)
    assert restarted.labels.progress()["total"] == 1 and restarted.labels.next("ana")["id"] == "f:0/b"
    restarted.close()
    c = Collector(str(tmp_path / "c2"), compare=True)
    try:
        assert c.pair("x:0", _user("Say hi."), "hi", "  ") is None and c.pair("x:1", _user("Say hi."), "", "a") is None
        assert c.pair("x:2", _user("Say hi."), "hi", "hello")["answer_b"] == "hello"
        assert c.labels.progress()["total"] == 1
    finally:
        c.close()


def test_a_collection_with_nothing_labelled_or_a_thumb_on_an_unknown_answer_stops_with_the_row(col):
    with pytest.raises(DataError, match="nothing labelled yet: no verdicts in comparisons.labels.jsonl and no thumbs"):
        read_human_labels(col)
    _write(col / "feedback.jsonl", [{"id": "a:0", "label": 1.0}, {"id": "zz:0", "label": 0.0}])
    with pytest.raises(DataError, match=r"feedback.jsonl: row 2: field 'id': 'zz:0' is not an answer"):
        read_human_labels(col)
    _write(col / "feedback.jsonl", [{"id": "a:0", "label": 0.5}])
    with pytest.raises(DataError, match=r"feedback.jsonl: row 1: field 'label': expected 1 \(up\) or 0 \(down\)"):
        read_human_labels(col)


def test_every_from_collected_run_writes_a_new_version_and_resume_finishes_the_last(tmp_path, col):
    assert collected_version(tmp_path, resume=False) == tmp_path / "collected" / "v1"
    assert collected_version(tmp_path, resume=True) == tmp_path / "collected" / "v1"
    for n in (1, 2, 10):
        (tmp_path / "collected" / f"v{n}").mkdir(parents=True)
    (tmp_path / "collected" / "vx").mkdir()
    assert collected_version(tmp_path, resume=False) == tmp_path / "collected" / "v11"
    assert collected_version(tmp_path, resume=True) == tmp_path / "collected" / "v10"
    args = SimpleNamespace(algo="grpo", reward_model="sft", output_dir=str(tmp_path), sft_model="/m/sft",
                           actor_model="tiny", from_collected=str(col), collected_mix=0.25, resume=False, step=None,
                           collected_counts={"verdicts": 0, "thumbs": 1, "pairs": 0})
    plan = Plan(args)
    assert plan.output(1) == tmp_path / "actor-models" / "tiny"
    assert plan.output(2) == tmp_path / "collected" / "v11" / "reward-models" / "tiny"
    assert plan.output(3) == tmp_path / "collected" / "v11" / "step3-models" / "tiny-grpo"
    assert plan.collected_flags(2) == ["--pairs_from_policy", "--labeller", f"human:{col}", "--pointwise_weight", "1.0"]
    args.collected_counts = {"verdicts": 3, "thumbs": 0, "pairs": 2}        # verdicts only: no pointwise term
    assert plan.collected_flags(2) == ["--pairs_from_policy", "--labeller", f"human:{col}"]
    assert plan.collected_flags(3) == ["--reward", "model", "--rl_only_data_path", f"collected:{col}",
                                       "--rl_only_mix", "0.25"]


@pytest.mark.parametrize("extra, words", [
    (["--step", "1", "2", "3"], "--from-collected trains the reward model (stage 2) and the policy (stage 3)"),
    (["--algo", "dpo"], "--from-collected trains the reward model (stage 2) and the policy (stage 3)"),
    (["--collected-mix", "0"], "--collected-mix must be in (0, 1], got 0.0"),
])
def test_train_py_refuses_what_it_cannot_train_from_a_collection(tmp_path, col, extra, words):
    import train

    _write(col / "feedback.jsonl", [{"id": "a:0", "label": 1.0}])
    with pytest.raises(SystemExit) as stop:
        train.main(["--actor-model", "tiny", "--from-collected", str(col), "--output-dir", str(tmp_path / "out"),
                    "--dry-run", *extra])
    assert words in str(stop.value)


@pytest.mark.parametrize("lo, hi, words", [
    (0.01, 0.09, "better, +5.0 points over sft (95% interval +1.0 .. +9.0): reload it"),
    (-0.09, -0.01, "worse, +5.0 points over sft (95% interval -9.0 .. -1.0): keep serving the model you have"),
    (-0.02, 0.12, "not distinguishable from the model it started from, +5.0 points over sft (95% interval -2.0 .. "
                  "+12.0)"),
])
def test_a_new_version_is_judged_by_its_gain_over_the_model_it_started_from(lo, hi, words):
    import train

    plan = SimpleNamespace(version=Path("out/collected/v3"))
    report = {"gain": {"sft": {"over": "base", "gain": 0.3, "lo": 0.2, "hi": 0.4},
                       "ppo": {"over": "sft", "gain": 0.05, "lo": lo, "hi": hi}}}
    assert train.version_verdict(report, plan) == f"=== version out/collected/v3: {words}"
    assert train.version_verdict({}, plan) == "=== version out/collected/v3: no closing evaluation to judge it by"
