"""The labelling store and its API: verdicts appended as stage 2's human-label JSONL (read back by
read_human_labels), the shown order undone, a restart offering only what has no verdict, two people
never given the same comparison, bad requests 4xx changing nothing, verdicts attributed to their key."""

import json

import pytest
from fastapi.testclient import TestClient

from applications.auth import Keys
from applications.chat_engine import ChatEngine
from applications.labelling import LabelStore
from applications.server import create_app
from training.utils.data.sources import DataError
from training.utils.labels.human import read_human_labels


def comparisons(path, n=6):
    rows = [{"id": f"{i}-0-1", "prompt": f"Say {i}.", "answer_a": f"a{i}", "answer_b": f"b{i}", "preference": None}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def engine():
    return ChatEngine("tiny", template="plain")


def test_verdicts_undo_the_shown_order_and_stage2_reads_them(tmp_path):
    store = LabelStore(str(comparisons(tmp_path / "c.jsonl")), str(tmp_path / "v.jsonl"), seed=3)
    picks = {}
    for choice in ("left", "right", "left", "tie", "skip", "right"):
        item = store.next("ana/s")
        picks[item["id"]] = (choice, item["left"])
        assert store.verdict("ana/s", item["id"], choice, "ana")["done"] == len(picks)
    assert store.next("ana/s") == {"done": 6, "total": 6, "finished": True}
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    for r in rows:
        choice, left = picks[r["id"]]
        assert r["shown"] == ("ab" if left == r["answer_a"] else "ba") and r["labeller"] == "ana"
        if choice in ("left", "right"):
            picked = left if choice == "left" else (r["answer_b"] if left == r["answer_a"] else r["answer_a"])
            assert r[f"answer_{r['preference']}"] == picked
        else:
            assert r["preference"] == choice
    assert {r["shown"] for r in rows} == {"ab", "ba"}          # both orders were shown
    pairs, counts, _ = read_human_labels(tmp_path / "v.jsonl")
    assert counts["rows"] == 6 and counts["tie"] == 1 and counts["skip"] == 1 and len(pairs) == 4


def labelled(c, v, n):
    """A store over comparisons ``c`` that has given ``n`` verdicts into ``v``, then stopped."""
    store = LabelStore(str(c), str(v))
    for _ in range(n):
        item = store.next("ana/1")
        store.verdict("ana/1", item["id"], "left", "ana")
    store.close()


def test_a_restart_offers_only_what_has_no_verdict_and_two_people_get_different_items(tmp_path):
    c, v = comparisons(tmp_path / "c.jsonl"), tmp_path / "v.jsonl"
    labelled(c, v, 2)
    again = LabelStore(str(c), str(v))                   # the server killed and started again
    assert again.progress() == {"done": 2, "total": 6}
    a, b = again.next("ana/1"), again.next("bo/2")
    assert a["id"] != b["id"] and again.next("ana/1")["id"] == a["id"]     # each keeps their own
    done_ids = {json.loads(x)["id"] for x in v.read_text().splitlines()}
    assert a["id"] not in done_ids and b["id"] not in done_ids


def test_bad_requests_are_4xx_and_change_nothing(tmp_path, engine):
    v = tmp_path / "v.jsonl"
    store = LabelStore(str(comparisons(tmp_path / "c.jsonl")), str(v))
    client = TestClient(create_app(engine, labels=store))
    h = {"X-Label-Session": "s1"}
    item = client.get("/label/api/next", headers=h).json()
    assert client.get("/label").status_code == 200 and "Which answer is better?" in client.get("/label").text
    for body, status in [({"id": "nope", "choice": "left"}, 404), ({"id": item["id"], "choice": "maybe"}, 400),
                         ("[1, 2]", 400), ("{not json", 400)]:
        r = client.post("/label/api/verdict", headers=h,
                        **({"json": body} if isinstance(body, dict) else {"content": body}))
        assert r.status_code == status and r.json()["error"]["message"], (body, r.text)
    r = client.post("/label/api/verdict", headers={"X-Label-Session": "s2"}, json={"id": item["id"], "choice": "left"})
    assert r.status_code == 409                          # lent to another session
    assert not v.exists()
    assert client.post("/label/api/verdict", headers=h, json={"id": item["id"], "choice": "tie"}).status_code == 200
    r = client.post("/label/api/verdict", headers=h, json={"id": item["id"], "choice": "left"})
    assert r.status_code == 409 and len(v.read_text().splitlines()) == 1


def test_with_keys_the_api_needs_one_and_verdicts_name_its_holder(tmp_path, engine):
    v = tmp_path / "v.jsonl"
    store = LabelStore(str(comparisons(tmp_path / "c.jsonl")), str(v))
    client = TestClient(create_app(engine, keys=Keys({"ana": "key-of-ana-123"}), labels=store))
    assert client.get("/label/api/next").status_code == 401
    h = {"Authorization": "Bearer key-of-ana-123"}
    item = client.get("/label/api/next", headers=h).json()
    assert client.post("/label/api/verdict", headers=h, json={"id": item["id"], "choice": "right"}).status_code == 200
    assert json.loads(v.read_text())["labeller"] == "ana"


@pytest.mark.parametrize("text, words", [
    ('{"id": "1", "prompt": "p", "answer_a": "x"}\n', "row 1: field 'answer_b': missing"),
    ('{"id": "1", "prompt": "p", "answer_a": "x", "answer_b": "y"}\n' * 2, "row 2: field 'id': '1' appears twice"),
])
def test_bad_comparison_files_name_the_row_and_field(tmp_path, text, words):
    (tmp_path / "c.jsonl").write_text(text)
    with pytest.raises(DataError, match=words):
        LabelStore(str(tmp_path / "c.jsonl"), str(tmp_path / "v.jsonl"))


def test_a_torn_last_line_is_cut_off_and_repeated_ids_dropped_with_warnings(tmp_path, caplog):
    c, v = comparisons(tmp_path / "c.jsonl"), tmp_path / "v.jsonl"
    labelled(c, v, 3)
    lines = v.read_text().splitlines(keepends=True)
    v.write_text(lines[0] + lines[1] + lines[0] + lines[2][:25])     # row 1 again, then a write cut short
    with caplog.at_level("WARNING", logger="speedchat"):
        again = LabelStore(str(c), str(v))
    assert again.progress() == {"done": 2, "total": 6}
    assert v.read_text() == lines[0] + lines[1] + lines[0]            # the torn line is gone from the file
    said, repeated = caplog.text, f"row 3: id '{json.loads(lines[0])['id']}' already appears at row 1; dropped"
    assert "its last line was cut short (25 bytes without a newline" in said and said.count(repeated) == 1
    with caplog.at_level("WARNING", logger="speedchat"):
        pairs, counts, _ = read_human_labels(v)                          # stage 2 counts the verdict once
    assert counts["rows"] == 2 and caplog.text.count(repeated) == 2   # and says so too
    again.close()


def test_a_second_server_on_the_same_verdicts_file_is_refused(tmp_path):
    import os

    c, v = comparisons(tmp_path / "c.jsonl"), tmp_path / "v.jsonl"
    first = LabelStore(str(c), str(v))
    with pytest.raises(DataError, match=rf"v.jsonl: another process \(pid {os.getpid()}\) is writing it"):
        LabelStore(str(c), str(v))
    first.close()
    LabelStore(str(c), str(v)).close()                                # free again once the first has stopped


def test_uncertain_order_offers_the_closest_pairs_first_and_places_new_ones_by_margin(tmp_path):
    from applications.labelling import reward_margin

    c = comparisons(tmp_path / "c.jsonl")               # answers "a<i>" / "b<i>"; margins below by hand
    margins = {"0-0-1": 0.9, "1-0-1": 0.1, "2-0-1": 0.5, "3-0-1": 0.3, "4-0-1": 0.7, "5-0-1": 0.2}
    store = LabelStore(str(c), str(tmp_path / "v.jsonl"), order="uncertain", margin=lambda it: margins[it["id"]])
    assert store.order == ["1-0-1", "5-0-1", "3-0-1", "2-0-1", "4-0-1", "0-0-1"]
    margins["new"] = 0.25
    store.add({"id": "new", "prompt": "p", "answer_a": "x", "answer_b": "y"})
    assert store.order.index("new") == 2
    got = []
    for _ in range(3):
        item = store.next("ana/1")
        got.append(item["id"])
        store.verdict("ana/1", item["id"], "tie", "ana")
    assert got == ["1-0-1", "5-0-1", "new"]
    store.close()
    shuffled = LabelStore(str(c), str(tmp_path / "w.jsonl"), seed=1, order="random")
    assert sorted(shuffled.order) == sorted(margins)[:-1] and shuffled.order != sorted(shuffled.order)
    shuffled.close()
    with pytest.raises(DataError, match="the uncertain order needs a reward model's margin"):
        LabelStore(str(c), str(tmp_path / "x.jsonl"), order="uncertain")
    margin = reward_margin("tiny", "plain")
    same = margin({"prompt": "Say hi.", "answer_a": "hi", "answer_b": "hi"})
    other = margin({"prompt": "Say hi.", "answer_a": "hi", "answer_b": "a much longer answer"})
    assert same < 1e-6 and other > 1e-3          # the same answer twice: no margin (to float rounding)
