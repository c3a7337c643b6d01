import json

import pytest

from training.utils.data import bundled
from training.utils.data.checker import check, parse_task, pass_rate, reward


@pytest.mark.parametrize("prompt, good, bad", [
    ("Write one sentence about cats. Use only capital letters.", "CATS ARE GREAT.", "Cats are great."),
    ("Write one sentence about cats. Use only lowercase letters.", "cats are great.", "Cats are great."),
    ("Describe the ocean in exactly 4 words.", "The ocean is vast.", "The ocean is very vast."),
    ('Write one sentence about rain that ends with the words "in the end".', "Rain stops in the end.",
     "In the end rain stops."),
    ('Write one sentence about tea that starts with the word "Today".', "Today, tea is warm.",
     "Tea is warm today."),
    ('List 3 fruits. Put each item on its own line starting with "- ".', "- apple\n- pear\n- plum",
     "- apple\n- pear"),
    ('List 2 fruits. Put each item on its own line starting with "- ".', "- apple\n- pear",
     "- apple\n- apple"),
    ('Give a JSON object about owls with exactly the keys "name", "age" and "size". Reply with the JSON only.',
     '{"name": "x", "age": 1, "size": 2}', '{"name": "x", "age": 1}'),
    ('Give a JSON object about owls with exactly the keys "name", "age" and "size". Reply with the JSON only.',
     ' {"size": 2, "age": 1, "name": "x"} ', "{name: 'x', age: 1, size: 2}"),
    ("What is 12 * 11? Reply with the number only.", "132", "The answer is 132"),
    ("Compute 5 - 9. Reply with the number only.", "-4", "4"),
    ('Repeat the word "go" exactly 3 times, separated by single spaces, and nothing else.', "go go go",
     "go go go go"),
])
def test_known_answers(prompt, good, bad):
    assert check(prompt, good) is True
    assert check(prompt, bad) is False
    assert reward(prompt, good) == 1.0 and reward(prompt, bad) == 0.0


def test_prompt_inside_templates_is_still_parsed():
    p = "Compute 2 + 2. Reply with the number only."
    wrapped = f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
    assert check(wrapped, "4") and check(f" Human: {p} Assistant:", "4.")
    assert parse_task("Tell me a joke.") is None and check("Tell me a joke.", "no") is False


def test_pass_rate_per_task():
    ps = ["Compute 2 + 2. Reply with the number only.", "Compute 3 + 3. Reply with the number only.",
          "Describe cats in exactly 2 words.", "hello"]
    r = pass_rate(ps, ["4", "7", "Cats purr.", "x"])
    assert r["pass_rate"] == pytest.approx(2 / 4) and r["n"] == 4
    assert r["per_task"] == {"math": 0.5, "unknown": 0.0, "words": 1.0}


def test_generator_rows_checked_deterministic_and_balanced():
    rows = bundled.generate(600, seed=3)
    assert rows == bundled.generate(600, seed=3) and rows != bundled.generate(600, seed=4)
    assert len({r["prompt"] for r in rows}) == 600
    per_task = {t: sum(r["task"] == t for r in rows) for t in bundled.MAKERS}
    assert set(per_task.values()) == {600 // 9, 600 // 9 + 1}
    assert [r["task"] for r in rows[:9]] == sorted(bundled.MAKERS)          # tasks in turn
    for r in rows:
        assert check(r["prompt"], r["chosen"]) and not check(r["prompt"], r["rejected"]), r
        assert parse_task(r["prompt"]).name == r["task"]


@pytest.mark.parametrize("task", sorted(bundled.MAKERS))
def test_every_task_has_2000_distinct_prompts_in_at_least_4_phrasings(task):
    from training.utils.data.checker import PATTERNS

    prompts = set()
    for split, k in (("train", 1500), ("dev", 150), ("test", 350)):
        rows = bundled.sample({task: k}, split, seed=7)
        assert len(rows) == k and all(r["task"] == task for r in rows)
        prompts |= {r["prompt"] for r in rows}
    assert len(prompts) >= 2000
    assert len(PATTERNS[task]) >= 4


def _subjects(prompt: str) -> set:
    """What a prompt is about, read back by the checker: topic nouns, words, phrases, categories, keys and
    arithmetic problems (counts such as "exactly 5 words" are the instruction, not the subject)."""
    t = parse_task(prompt)
    p, out = t.params, set()
    if "topic" in p:
        out.add(("noun", p["topic"].split()[-1]))
    for f in ("phrase", "word", "category", "k1", "k2", "k3"):
        if f in p:
            out.add(("key" if f.startswith("k") else f, p[f]))
    if t.name == "math":
        out.add(("math", bundled.math_key(int(p["a"]), p["op"], int(p["b"]))))
    return out


def test_eval_prompts_share_no_wording_or_parameters_with_training():
    from training.utils.data.checker import EVAL_ONLY_PHRASINGS, PATTERNS, _compile

    train = [r["prompt"] for seed in (0, 1, 2) for r in bundled.generate(6000, seed)]
    dev, test = ([r["prompt"] for r in bundled.eval_rows(s)] for s in ("dev", "test"))
    subjects = {name: set().union(*map(_subjects, ps)) for name, ps in (("train", train), ("dev", dev), ("test", test))}
    assert not subjects["train"] & subjects["dev"] and not subjects["train"] & subjects["test"]
    assert not subjects["dev"] & subjects["test"]
    assert {k for k, _ in subjects["test"]} == {"noun", "phrase", "word", "category", "key", "math"}
    assert not set(train) & (set(dev) | set(test)) and not set(dev) & set(test)
    # the evaluation-only phrasings: never in a training row, in about one in five evaluation prompts
    held = [_compile(p) for ps in PATTERNS.values() for p in ps[-EVAL_ONLY_PHRASINGS:]]
    assert not any(rx.search(p) for p in train for rx in held)
    unseen = sum(any(rx.search(p) for rx in held) for p in test) / len(test)
    assert 0.12 < unseen < 0.28


def test_dev_and_test_sets_are_fixed_task_balanced_and_interleaved():
    import hashlib

    dev, test = bundled.eval_rows("dev"), bundled.eval_rows("test")
    for rows, per in ((dev, 32), (test, 64)):
        assert len(rows) == 9 * per and {t: sum(r["task"] == t for r in rows) for t in bundled.MAKERS} == \
            {t: per for t in bundled.MAKERS}
        assert [r["task"] for r in rows[:18]] == sorted(bundled.MAKERS) * 2       # the first k are balanced too
        for r in rows:
            assert check(r["prompt"], r["chosen"]) and not check(r["prompt"], r["rejected"])
    # fixed: the same prompts in every process and for every training seed or size (changing them is a new
    # VERSION of the bundled data, and every reported figure is measured again)
    digest = hashlib.sha256("\n".join(r["prompt"] for r in test).encode()).hexdigest()[:16]
    assert (bundled.VERSION, digest) == (3, TEST_SET_DIGEST)
    with pytest.raises(ValueError, match="unknown evaluation set 'train'"):
        bundled.eval_rows("train")


TEST_SET_DIGEST = "4c0041983a2f8a2e"


def test_write_jsonl(tmp_path):
    tr, ev, te = bundled.write(str(tmp_path), 100, 1)
    rows = [json.loads(line) for line in tr.read_text().splitlines()]
    assert len(rows) == 100 and set(rows[0]) == {"prompt", "chosen", "rejected", "task"}
    assert len(ev.read_text().splitlines()) == 288 and len(te.read_text().splitlines()) == 576
