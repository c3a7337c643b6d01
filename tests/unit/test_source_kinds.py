"""The registry of reward-source and labeller kinds: every spec finds one kind, roles are enforced with errors
and help texts that list the kinds able to play them, and every builder a role needs is registered."""

import pytest

from training.utils.arguments import build_parser, parse_config
from training.utils.config import ConfigError
from training.utils.labels.labellers import LabelError, build_labeller
from training.utils.reward_sources import RewardError, build_reward, needs_model
from training.utils.source_kinds import SOURCE_KINDS, SourceError, kinds_for, parse, syntaxes


@pytest.mark.parametrize("spec, kind, target", [
    ("checker", "checker", ""),
    ("http://127.0.0.1:9/score", "http", "http://127.0.0.1:9/score"),
    ("https://x.org/r", "http", "https://x.org/r"),
    ("model", "model", ""),
    ("model:out/rm", "model", "out/rm"),
    ("judge:tiny", "judge", "tiny"),
    ("human:labels.jsonl", "human", "labels.jsonl"),
    ("rule:pkg.mod:fn", "rule", "pkg.mod:fn"),
    ("pkg.mod:fn", "rule", "pkg.mod:fn"),
])
def test_every_spec_finds_its_kind_and_target(spec, kind, target):
    k, t = parse(spec, "label" if kind in ("judge", "human") else "reward")
    assert (k.name, t) == (kind, target)


@pytest.mark.parametrize("spec", ["magic", "judge:", "human:", "model:", "rule:", "rule:mod", ":fn", ""])
def test_specs_of_no_kind_are_refused_listing_the_kinds(spec):
    with pytest.raises(SourceError, match="unknown source .*: to reward stage 3 use checker, http"):
        parse(spec, "reward")


def test_roles_are_enforced():
    assert [k.name for k in kinds_for("reward")] == ["checker", "http", "model", "rule"]
    assert [k.name for k in kinds_for("metric")] == ["checker", "http", "rule"]
    assert [k.name for k in kinds_for("label")] == ["checker", "http", "judge", "human", "rule"]
    assert [k.name for k in kinds_for("judge")] == ["checker", "http", "judge", "rule"]
    assert syntaxes("metric") == "checker, http(s)://URL, rule:module:function"
    with pytest.raises(SourceError, match=r"'judge:tiny' \(judge:MODEL\) cannot reward stage 3: use checker"):
        parse("judge:tiny", "reward")
    with pytest.raises(SourceError, match=r"'model:x' \(model, model:DIR\) cannot label comparisons"):
        parse("model:x", "label")
    assert [k.offline for k in SOURCE_KINDS.values()] == [False, False, False, False, True, False]


def test_every_kind_has_the_builders_its_roles_need():
    for k in SOURCE_KINDS.values():
        if "reward" in k.roles:
            assert k.reward is not None, k.name
        if "judge" in k.roles:      # asked at once: its own labeller, else one scoring with its reward source
            assert k.label is not None or k.reward is not None, k.name


def test_builders_read_the_registry():
    assert needs_model(["checker", "model", "model:a/b", "rule:m:f"]) == ["", "a/b"]
    loaded = []
    combo = build_reward(["model:a", "checker"], load_model=lambda p: loaded.append(p) or (lambda **kw: None))
    assert loaded == ["a"] and combo.names == ["model:a", "rule:training.utils.data.checker:reward"]
    with pytest.raises(RewardError, match="cannot reward stage 3"):
        build_reward(["human:f.jsonl"])
    with pytest.raises(LabelError, match="labeller 'human:f.jsonl': its labels are read from their file"):
        build_labeller("human:f.jsonl")
    with pytest.raises(LabelError, match=r"labeller 'model': 'model' \(model, model:DIR\) cannot label"):
        build_labeller("model")


def test_help_and_parse_time_errors_come_from_the_registry():
    text = " ".join(build_parser("", "rl").format_help().split())
    assert "one of: checker, http(s)://URL, model, model:DIR, rule:module:function (default: ['model'])" in text
    assert "one of: checker, http(s)://URL, judge:MODEL, human:FILE, rule:module:function (default: 'checker')" in text
    for flags, match in [
        (["--reward", "checker", "magic"], "--reward: unknown source 'magic'"),
        (["--eval_reward", "model:x"], "--eval_reward: 'model:x' .* cannot score the evaluation"),
        (["--judge", "model"], "--judge: 'model' .* cannot label rollouts as they come"),
        (["--labeller", "nothing"], "--labeller: unknown source 'nothing'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_config(flags, stage="rl")
