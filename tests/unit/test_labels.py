"""Comparison data from the policy: pairs from labellers' verdicts, human-label files, the AUCs, and a
reward model trained on policy pairs judging the policy's answers (tiny models)."""

import json

import pytest
import torch

from training.utils.data.sources import DataError
from training.utils.labels.human import read_human_labels, write_jsonl
from training.utils.labels.labellers import LabelError, build_labeller
from training.utils.labels.policy import collect_pairs, comparison_rows, on_policy_auc, pair_rows
from training.utils.labels.ranking import auc, copeland_scores, ranked_pairs, within_prompt_auc


def test_ranked_pairs_all_and_best_worst_drop_ties():
    # scores 1, 0, 1, 0.5: the two 1s tie with each other, every other two differ
    assert sorted(ranked_pairs([1.0, 0.0, 1.0, 0.5], "all")) == [(0, 1), (0, 3), (2, 1), (2, 3), (3, 1)]
    assert ranked_pairs([1.0, 0.0, 1.0, 0.5], "best_worst") == [(0, 1)]
    assert ranked_pairs([0.0, 0.0, 0.0, 0.0], "all") == []          # a prompt whose answers tie gives none
    assert ranked_pairs([1.0, 1.0], "best_worst") == []
    with pytest.raises(ValueError, match="pair rule"):
        ranked_pairs([1.0, 0.0], "some")


def test_copeland_scores_from_pairwise_verdicts():
    # 0 beats 1 and 2, 1 ties 2: wins 2, 0.5, 0.5
    assert copeland_scores(3, {(0, 1): "a", (0, 2): "a", (1, 2): "tie"}) == [2.0, 0.5, 0.5]
    assert copeland_scores(2, {(0, 1): "b"}) == [0.0, 1.0]
    with pytest.raises(ValueError, match="verdict 'c'"):
        copeland_scores(2, {(0, 1): "c"})


def test_auc_global_and_within_prompt_by_hand():
    # prompt 1: labels 1, 0, 0; scores 0.9, 0.1, 0.95 -> within: (0.9 > 0.1) right, (0.9 > 0.95) wrong
    # prompt 2: labels 1, 0; scores 0.2, 0.3 -> wrong; prompt 3: all labels 1 -> no pair
    groups = [([0.9, 0.1, 0.95], [1, 0, 0]), ([0.2, 0.3], [1, 0]), ([0.5, 0.6], [1, 1])]
    assert within_prompt_auc(groups) == (pytest.approx(1 / 3), 3)
    scores = [0.9, 0.1, 0.95, 0.2, 0.3, 0.5, 0.6]
    labels = [1, 0, 0, 1, 0, 1, 1]
    # positives 0.9 0.2 0.5 0.6 against negatives 0.1 0.95 0.3: right 2 + 1 + 2 + 2 = 7 of 12
    assert auc(scores, labels) == pytest.approx(7 / 12)
    assert auc([1.0, 2.0], [1, 1]) is None
    assert auc([1.0, 1.0], [1, 0]) == 0.5                        # a tie counts half


class FakeSampler:
    """Answers 'p<i>-a<j>' for prompt i; the labeller below scores answer j of prompt i by a table."""

    k, batch_prompts, seconds = 3, 2, 0.0

    def __call__(self, prompts):
        return [[f"{p[0]['content']}-a{j}" for j in range(self.k)] for p in prompts]

    def text(self, messages):
        return messages[0]["content"]


TABLE = {"p0": [1.0, 0.0, 1.0], "p1": [0.0, 0.0, 0.0], "p2": [0.2, 0.9, 0.5], "p3": [1.0, 1.0, 0.0]}


class FakeLabeller:
    name, pairwise = "fake", False

    def __init__(self):
        self.asked = []

    def scores(self, prompt, answers, row):
        self.asked.append(prompt)
        return TABLE[prompt], len(answers)


def test_collect_pairs_ranks_answers_drops_ties_and_keeps_the_budget():
    prompts = [{"prompt": [{"role": "user", "content": p}], "group": ""} for p in TABLE]
    lab = FakeLabeller()
    records, stats = collect_pairs(prompts, FakeSampler(), lab, budget=11, rule="all", seed=0)
    # 3 labels a prompt: 11 labels buy 3 prompts, never a fourth
    assert stats["labels"] == 9 and stats["prompts"] == 3 and len(lab.asked) == 3
    by = {r["prompt"][0]["content"]: r for r in records}
    expected = {"p0": [(0, 1), (2, 1)], "p1": [], "p2": [(1, 0), (2, 0), (1, 2)], "p3": [(0, 2), (1, 2)]}
    for p, r in by.items():
        assert sorted(r["pairs"]) == sorted(expected[p])
    assert stats["pairs"] == sum(len(expected[p]) for p in by)
    assert stats["mixed_prompts"] == sum(1 for p in by if p != "p1")
    rows = pair_rows(records, "fake")
    assert len(rows) == stats["pairs"]
    if "p2" in by:
        r = next(r for r in rows if r["prompt"] == "p2" and r["chosen"] == "p2-a1" and r["rejected"] == "p2-a0")
        assert (r["chosen_label"], r["rejected_label"], r["labeller"]) == (0.9, 0.2, "fake")


def test_best_worst_gives_one_pair_per_mixed_prompt():
    prompts = [{"prompt": [{"role": "user", "content": p}], "group": ""} for p in TABLE]
    records, stats = collect_pairs(prompts, FakeSampler(), FakeLabeller(), budget=12, rule="best_worst", seed=0)
    assert stats["prompts"] == 4 and stats["pairs"] == 3
    assert {r["prompt"][0]["content"]: r["pairs"] for r in records}["p2"] == [(1, 0)]


def test_on_policy_auc_reads_scores_in_record_order():
    records = [{"answers": ["x", "y"], "labels": [1.0, 0.0]}, {"answers": ["u", "v"], "labels": [0.0, 1.0]}]
    res = on_policy_auc(records, [0.5, 0.7, 0.1, 0.2])      # prompt 1 wrong, prompt 2 right
    assert res["on_policy_within_prompt_auc"] == 0.5 and res["within_prompt_pairs"] == 2
    # positives 0.5, 0.2 against negatives 0.7, 0.1: right 1 + 1 of 4
    assert res["on_policy_auc"] == 0.5


def test_rule_labeller_errors_name_the_labeller_and_the_row():
    lab = build_labeller("rule:support.labels:garbage")
    with pytest.raises(LabelError, match=r"labeller rule:support.labels:garbage: row 7: .*not a number"):
        lab.scores("p", ["a", "b"], 7)
    with pytest.raises(LabelError, match="cannot import"):
        build_labeller("rule:no_such_module_here:f")
    with pytest.raises(LabelError, match="labeller 'judge': unknown source 'judge': to label comparisons use checker"):
        build_labeller("judge")
    assert build_labeller("rule:support.labels:nonempty").scores("p", ["a", ""], 1) == ([1.0, 0.0], 2)
    checker = build_labeller("checker")
    assert checker.scores("Compute 2 + 3. Reply with the number only.", ["5", "6"], 1) == ([1.0, 0.0], 2)


def test_http_labeller_same_contract_as_the_http_reward():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            rewards = [float(len(a)) for a in body["answers"]] if body["prompts"][0] != "bad" else ["x"]
            data = json.dumps({"rewards": rewards}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        lab = build_labeller(f"http://127.0.0.1:{srv.server_port}/label")
        assert lab.scores("q", ["ab", "abcd", ""], 1) == ([2.0, 4.0, 0.0], 3)
        with pytest.raises(LabelError, match=r"row 3: .*expected 2 rewards"):
            lab.scores("bad", ["a", "b"], 3)
    finally:
        srv.shutdown()


def test_judge_labeller_on_a_tiny_model(tiny_tok, monkeypatch):
    """The judge's verdicts come from its A/B probabilities in both orders: a verdict that flips with the
    order is a tie; a template without the answers' fields is refused before anything runs."""
    import torch

    lab = build_labeller("judge:tiny")
    # P(first answer better), asked as (i, j) for the pairs (0,1) (0,2) (1,2), then as (j, i):
    # (0,1): 0.8 then 0.3 -> 0 wins both ways; (0,2): 0.6 then 0.7 -> flips with the order, a tie;
    # (1,2): 0.2 then 0.9 -> 2 wins both ways. Wins: 0 -> 1.5, 1 -> 0, 2 -> 1.5
    asked = []
    monkeypatch.setattr(lab, "prefer_first", lambda items: asked.append(items) or [0.8, 0.6, 0.2, 0.3, 0.7, 0.9])
    assert lab.scores("Say hi.", ["hi", "hello there", "x"], 1) == ([1.5, 0.0, 1.5], 3)
    assert [it[1:] for it in asked[0]] == [("hi", "hello there"), ("hi", "x"), ("hello there", "x"),
                                           ("hello there", "hi"), ("x", "hi"), ("x", "hello there")]
    monkeypatch.undo()
    # the real probability is the softmax of the letters' next-token logits of the rendered template; in a
    # batch with a longer item the short one is left-padded and must read the same as alone, unpadded
    p = lab.prefer_first([("Say hi.", "hi", "x"), ("Say hi.", "a much longer answer than the other one", "x")])[0]
    ids = torch.tensor([lab.tok(lab._texts("Say hi.", "hi", "x"), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = lab.model(input_ids=ids).logits[0, -1, lab.letters]
    assert p == pytest.approx(torch.softmax(logits, -1)[0].item(), abs=1e-5)
    with pytest.raises(LabelError, match=r"no \{answer_b\} field"):
        build_labeller("judge:tiny", "Q: {prompt} A: {answer_a}")


def test_human_labels_round_trip_and_bad_rows(tmp_path):
    records = [{"prompt": [{"role": "user", "content": "Say hi."}], "answers": ["hi", "hello", "hi"]}]
    rows = comparison_rows(records, seed=0)
    # the two identical answers are not asked about: 3 answers, 2 distinct comparisons
    assert len(rows) == 2 and all(r["preference"] is None and r["prompt"] == "Say hi." for r in rows)
    for r, pref in zip(rows, ("a", "tie")):
        r["preference"] = pref
    f = write_jsonl(tmp_path / "labels.jsonl", rows)
    with pytest.raises(DataError, match="exists"):
        write_jsonl(f, rows)                                     # a labelled file is never replaced
    pairs, counts, _ = read_human_labels(f)
    assert counts == {"rows": 2, "a": 1, "b": 0, "tie": 1, "skip": 0}
    assert len(pairs) == 1 and pairs[0]["chosen"] == rows[0]["answer_a"] and pairs[0]["rejected"] == rows[0]["answer_b"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Say hi."}]

    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "p", "answer_a": "x", "answer_b": "y", "preference": "B"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "answer_b"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: row 2: field 'answer_b': missing"):
        read_human_labels(bad)
    bad.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "preference": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: row 3: field 'preference': 'maybe' is not one of a, b, tie, skip"):
        read_human_labels(bad)
    bad.write_text(json.dumps({**good, "answer_a": ""}) + "\n")
    with pytest.raises(DataError, match=r"row 1: field 'answer_a': empty"):
        read_human_labels(bad)
    with pytest.raises(DataError, match="no such file"):
        read_human_labels(tmp_path / "missing.jsonl")


def test_pointwise_loss_and_label_rows_on_hand_values():
    import math

    from training.utils.labels.policy import label_rows
    from training.utils.losses import pointwise_loss

    # -log sigmoid(0), -log(1 - sigmoid(2)), -log(1 - sigmoid(-1))
    want = (math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e ** -1)) / 3
    assert pointwise_loss(torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0])).item() == \
        pytest.approx(want, abs=1e-6)
    rec = {"prompt": "Say hi.", "group": "g", "answers": ["hi", "", "hello"], "labels": [1.0, 0.0, 1.0],
           "pairs": [(0, 1), (2, 1)]}
    rows = label_rows([rec], "rule:x")
    assert [(r["answer"], r["label"]) for r in rows] == [("hi", 1.0), ("", 0.0), ("hello", 1.0)]
    assert rows[0]["labeller"] == "rule:x" and rows[0]["group"] == "g"
