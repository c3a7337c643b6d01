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


def test_generator_rows_checked_deterministic_and_split_by_prompt():
    rows = bundled.generate(600, seed=3)
    assert rows == bundled.generate(600, seed=3)
    assert len({r["prompt"] for r in rows}) == 600
    assert {r["task"] for r in rows} == set(bundled.MAKERS)
    for r in rows:
        assert check(r["prompt"], r["chosen"]) and not check(r["prompt"], r["rejected"]), r
    tr, ev = bundled.train_eval(600, seed=3)
    assert len(tr) + len(ev) == 600 and 30 < len(ev) < 100
    assert not {r["prompt"] for r in tr} & {r["prompt"] for r in ev}
    # the split depends on the prompt only: a bigger generation keeps every held-out prompt held out
    tr2, ev2 = bundled.train_eval(1200, seed=3)
    assert {r["prompt"] for r in ev} <= {r["prompt"] for r in ev2}


def test_write_jsonl(tmp_path):
    tr, ev = bundled.write(str(tmp_path), 100, 1)
    rows = [json.loads(line) for line in tr.read_text().splitlines()]
    assert rows and set(rows[0]) == {"prompt", "chosen", "rejected", "task"}
    assert ev.is_file()
