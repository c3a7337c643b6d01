import json
import os

import numpy as np
import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.data import PairCollator, PromptCollator, SFTCollator, build_phase, collect_rows, phase_indices
from training.utils.data.pipeline import cache_key, holdout
from training.utils.data.sources import DataError


def test_phase_indices_partition_and_stable():
    fr = [0.2, 0.4, 0.4]
    parts = [phase_indices(1000, fr, p, seed=5) for p in (1, 2, 3)]
    assert [len(p) for p in parts] == [200, 400, 400]
    allidx = np.concatenate(parts)
    assert len(set(allidx.tolist())) == 1000 and set(allidx.tolist()) == set(range(1000))
    again = [phase_indices(1000, fr, p, seed=5) for p in (1, 2, 3)]
    assert all((a == b).all() for a, b in zip(parts, again))
    assert not (phase_indices(1000, fr, 1, seed=6) == parts[0]).all()


def test_holdout_is_seeded_and_disjoint():
    rows = list(range(100))
    tr, ev = holdout(rows, 0.1, 1)
    assert len(ev) == 10 and not set(tr) & set(ev) and sorted(tr + ev) == rows
    assert holdout(rows, 0.1, 1) == (tr, ev)


def _cfg(tmp_path, *extra):
    return parse_config(["--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300",
                         "--max_seq_len", "96", "--max_prompt_seq_len", "64", *extra]).data


def test_bundled_phases_disjoint_train_and_eval(tmp_path):
    d = _cfg(tmp_path)
    prompts = {}
    for phase in (1, 2, 3):
        rows = collect_rows(d, phase, seed=1)
        prompts[phase] = {split: {r["prompt"][-1]["content"] for r in rs} for split, rs in rows.items()}
    for a, b in ((1, 2), (1, 3), (2, 3)):
        assert not prompts[a]["train"] & prompts[b]["train"]
    train_all = set().union(*(prompts[p]["train"] for p in (1, 2, 3)))
    eval_all = set().union(*(prompts[p]["eval"] for p in (1, 2, 3)))
    assert not train_all & eval_all
    # stable across calls
    assert {r["prompt"][-1]["content"] for r in collect_rows(d, 2, seed=1)["train"]} == prompts[2]["train"]


def test_tokenised_phases_and_cache(tmp_path, tiny_tok):
    d = _cfg(tmp_path)
    tr1, ev1, st1, path1 = build_phase(d, tiny_tok, 1, seed=1)
    assert len(tr1) == st1["train"]["kept"] > 0 and len(ev1) > 0
    r = tr1[0]
    assert r["input_ids"][-1] == tiny_tok.eos_token_id and 0 < r["prompt_len"] < len(r["input_ids"])
    text = tiny_tok.decode(r["input_ids"][:r["prompt_len"]])
    assert text.endswith("<|im_start|>assistant\n")
    tr2, _, _, _ = build_phase(d, tiny_tok, 2, seed=1)
    assert set(tr2.column_names) == {"chosen_ids", "rejected_ids", "prompt_len"}
    tr3, _, _, _ = build_phase(d, tiny_tok, 3, seed=1)
    # the row's other columns and its messages (multi-turn rollouts render them with tools), JSON
    assert set(tr3.column_names) == {"prompt_ids", "prompt_text", "columns", "messages"}
    assert isinstance(json.loads(tr3[0]["columns"]), dict)
    msgs = json.loads(tr3[0]["messages"])
    assert msgs[-1]["role"] == "user" and msgs[-1]["content"] in tr3[0]["prompt_text"]
    # second call reads the cache (same directory, no rebuild)
    mtime = os.path.getmtime(os.path.join(path1, "stats.json"))
    _, _, _, again = build_phase(d, tiny_tok, 1, seed=1)
    assert again == path1 and os.path.getmtime(os.path.join(again, "stats.json")) == mtime


def test_cache_key_changes_with_every_input(tmp_path, tiny_tok):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    base = _cfg(tmp_path, "--data_path", str(f))
    k = cache_key(base, tiny_tok, 1, 1)
    assert cache_key(base, tiny_tok, 1, 1) == k
    assert cache_key(base, tiny_tok, 2, 1) != k
    assert cache_key(base, tiny_tok, 1, 2) != k
    for extra in (["--max_seq_len", "97"], ["--data_split", "3,4,3"], ["--template", "plain"],
                  ["--truncation", "drop"], ["--max_train_samples", "5"]):
        assert cache_key(_cfg(tmp_path, "--data_path", str(f), *extra), tiny_tok, 1, 1) != k, extra
    f.write_text(json.dumps({"prompt": "a", "chosen": "B", "rejected": "c"}) + "\n")
    assert cache_key(base, tiny_tok, 1, 1) != k


def test_truncation_and_drop_are_counted(tmp_path, tiny_tok):
    f = tmp_path / "long.jsonl"
    rows = [{"prompt": "word " * 200, "chosen": "ok", "rejected": "no"},
            {"prompt": "short question", "chosen": "answer " * 200, "rejected": "no"},
            {"prompt": "fine", "chosen": "fine", "rejected": "no"}] * 4
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = _cfg(tmp_path, "--data_path", str(f), "--data_split", "1,0,0", "--eval_fraction", "0", "--dedup", "false")
    tr, _, st, _ = build_phase(d, tiny_tok, 1, seed=1)
    s = st["train"]
    assert s["rows"] == 12 and s["kept"] == 12 and s["prompt_truncated"] == 4 and s["answer_truncated"] == 4
    assert max(len(x) for x in tr["input_ids"]) <= 96
    d2 = _cfg(tmp_path, "--data_path", str(f), "--data_split", "1,0,0", "--eval_fraction", "0", "--truncation", "drop",
              "--dedup", "false")
    _, _, st2, _ = build_phase(d2, tiny_tok, 1, seed=1)
    assert st2["train"]["kept"] == 4 and st2["train"]["dropped"] == 8
    # by default the four copies of each row are one row (and the cache key tells the two apart)
    d3 = _cfg(tmp_path, "--data_path", str(f), "--data_split", "1,0,0", "--eval_fraction", "0")
    _, _, st3, _ = build_phase(d3, tiny_tok, 1, seed=1)
    assert st3["train"]["rows"] == 3 and st3["train"]["kept"] == 3


def test_dedupe_within_splits_and_eval_leaks():
    from training.utils.data.pipeline import dedupe

    a = {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": None}
    b = {**a, "chosen": "b"}
    c = {**a, "rejected": "r"}
    out = dedupe({"train": [a, b, dict(a), c], "eval": [dict(b), {**a, "chosen": "new"}, {**a, "chosen": "new"}]})
    assert out["train"] == [a, b, c] and out["eval"] == [{**a, "chosen": "new"}]


def test_pairs_need_rejected(tmp_path, tiny_tok):
    f = tmp_path / "sft_only.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "a"}) + "\n" for i in range(10)))
    d = _cfg(tmp_path, "--data_path", str(f), "--data_split", "0,1,0")
    with pytest.raises(DataError, match=r"sft_only.jsonl: row \d+: field 'rejected': missing"):
        build_phase(d, tiny_tok, 2, seed=1)


def test_sft_collator_masks_prompt_and_padding():
    rows = [{"input_ids": [5, 6, 7, 8], "prompt_len": 2}, {"input_ids": [9, 10], "prompt_len": 1}]
    b = SFTCollator(pad_token_id=0)(rows)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, -100, -100]]
    b = SFTCollator(pad_token_id=0, loss_on="all")(rows)
    assert b["labels"].tolist() == [[5, 6, 7, 8], [9, 10, -100, -100]]


def test_pair_and_prompt_collators():
    rows = [{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 2], "prompt_len": 1},
            {"chosen_ids": [4, 5], "rejected_ids": [4, 5, 6, 7], "prompt_len": 1}]
    b = PairCollator(pad_token_id=0)(rows)
    assert b["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [1, 2, 0, 0], [4, 5, 6, 7]]
    assert b["end_index"].tolist() == [2, 1, 1, 3]
    p = PromptCollator(pad_token_id=0)([{"prompt_ids": [1, 2, 3]}, {"prompt_ids": [4]}])
    assert p["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert p["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert torch.equal(PromptCollator(0, pad_to_multiple_of=4)([{"prompt_ids": [1]}])["input_ids"],
                       torch.tensor([[0, 0, 0, 1]]))


def test_balance_makes_every_group_equally_frequent(tmp_path):
    from collections import Counter

    data = tmp_path / "groups.jsonl"
    sizes = {"a": 60, "b": 20, "c": 8}
    data.write_text(
        "".join(
            json.dumps({"prompt": f"question {g} {i}", "chosen": "yes", "rejected": "no", "kind": g}) + "\n"
            for g, n in sizes.items()
            for i in range(n)
        )
    )
    plain = collect_rows(_cfg(tmp_path, "--data_path", str(data), "--data_split", "1,0,0"), 1, seed=1)["train"]
    d = _cfg(tmp_path, "--data_path", str(data), "--data_split", "1,0,0", "--balance_key", "kind")
    rows = collect_rows(d, 1, seed=1)["train"]
    counts = Counter(r["_group"] for r in rows)
    natural = Counter(r["prompt"][-1]["content"].split()[1] for r in plain)
    assert set(counts) == {"a", "b", "c"} and len(set(counts.values())) == 1              # one count
    assert set(counts.values()) == {max(natural.values())} and max(natural.values()) > 3 * min(natural.values())
    key = lambda r: r["prompt"][-1]["content"]
    assert {key(r) for r in rows} == {key(r) for r in plain}               # nothing lost, nothing new
    assert len(rows) == 3 * max(natural.values()) > len(plain)              # rare groups repeated
    assert [key(r) for r in collect_rows(d, 1, seed=1)["train"]] == [key(r) for r in rows]   # seeded
    assert "_group" not in plain[0]


@pytest.mark.parametrize("seed", [1, 2, 1234])
def test_report_prompts_never_in_a_training_slice(tmp_path, seed):
    """The dev and test prompts are in no stage's training rows, for the main job's data settings (4000
    bundled rows, task-balanced) and any seed; the stages evaluate on dev, and test is in no stage at all."""
    from inference.passrate import eval_prompts

    d = _cfg(tmp_path, "--bundled_size", "4000", "--balance_key", "task")
    dev, test = set(eval_prompts("dev")), set(eval_prompts("test"))
    assert (len(dev), len(test)) == (288, 576) and not dev & test
    for phase in (1, 2, 3):
        rows = collect_rows(d, phase, seed)
        train = {r["prompt"][-1]["content"] for r in rows["train"]}
        evals = {r["prompt"][-1]["content"] for r in rows["eval"]}
        assert len(train) > 500 and not train & (dev | test)
        assert evals <= dev and not evals & test
