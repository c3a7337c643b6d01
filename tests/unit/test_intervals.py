"""95% intervals of pass-rates and gains: bootstraps within tasks, paired gains, Student t over seeds."""

import math

import pytest

from inference.intervals import interval_text, paired_gain, rate_interval, seed_interval
from inference.passrate import gain, scored


def test_rate_interval_matches_the_binomial_standard_error():
    passes = [1] * 30 + [0] * 70                       # p = 0.3 on 100 prompts: se = sqrt(0.3 * 0.7 / 100) = 0.0458
    lo, hi = rate_interval(passes)
    assert lo == pytest.approx(0.3 - 1.96 * 0.0458, abs=0.012) and hi == pytest.approx(0.3 + 1.96 * 0.0458, abs=0.012)
    assert rate_interval([1] * 20) == (1.0, 1.0) and rate_interval(passes) == (lo, hi)     # seeded
    with pytest.raises(ValueError, match="no prompts"):
        rate_interval([])


def test_resampling_within_tasks_keeps_the_task_balance():
    # one task always passes, the other never: within-task resamples all give 0.5; a plain bootstrap would not
    passes, tasks = [1] * 32 + [0] * 32, ["a"] * 32 + ["b"] * 32
    assert rate_interval(passes, tasks) == (0.5, 0.5)
    lo, hi = rate_interval(passes)
    assert lo < 0.4 and hi > 0.6
    with pytest.raises(ValueError, match="64 values but 3 groups"):
        rate_interval(passes, ["a", "b", "c"])


def test_paired_gain_cancels_what_the_prompts_share():
    before = [1, 0] * 50
    same = paired_gain(before, list(before))
    assert (same["gain"], same["lo"], same["hi"], same["n"]) == (0.0, 0.0, 0.0, 100)
    # ten prompts flip from fail to pass: gain 0.1, se of the mean difference sqrt(0.1 * 0.9 / 100) = 0.03
    after = [1 if i % 2 == 0 or i < 20 else 0 for i in range(100)]
    g = paired_gain(before, after)
    assert g["gain"] == pytest.approx(0.1) and g["lo"] == pytest.approx(0.1 - 1.96 * 0.03, abs=0.012)
    assert g["hi"] == pytest.approx(0.1 + 1.96 * 0.03, abs=0.012) and g["lo"] > 0
    with pytest.raises(ValueError, match="equally long"):
        paired_gain([1, 0], [1])


def test_seed_interval_is_students_t():
    s = seed_interval([0.1, 0.2, 0.3])                  # mean 0.2, sd 0.1, t(0.975, 2) = 4.303
    half = 4.303 * 0.1 / math.sqrt(3)
    assert s["mean"] == pytest.approx(0.2) and (s["min"], s["max"], s["n"]) == (0.1, 0.3, 3)
    assert s["lo"] == pytest.approx(0.2 - half) and s["hi"] == pytest.approx(0.2 + half)
    one = seed_interval([0.4])
    assert one["lo"] == one["hi"] == one["mean"] == 0.4
    assert interval_text(0.025, 0.113, signed=True) == "+2.5 .. +11.3" and interval_text(0.3, 0.41) == "30.0 .. 41.0"


def test_scored_answers_and_gain_per_task():
    math_p = "Compute 2 + 2. Reply with the number only."
    words_p = "Describe cats in exactly 2 words."
    before = [
        {"prompt": math_p, "answer": "5", "pass": False},
        {"prompt": words_p, "answer": "Cats purr.", "pass": True},
    ] * 4
    after = [
        {"prompt": math_p, "answer": "4", "pass": True},
        {"prompt": words_p, "answer": "Cats purr.", "pass": True},
    ] * 4
    s = scored(before)
    assert (s["pass_rate"], s["n"], s["per_task"], s["per_task_n"]) == (0.5, 8, {"math": 0.0, "words": 1.0},
                                                                         {"math": 4, "words": 4})
    assert s["pass_rate_ci"] == [0.5, 0.5] and s["per_task_ci"] == {"math": [0.0, 0.0], "words": [1.0, 1.0]}
    g = gain(before, after)
    assert (g["gain"], g["lo"], g["hi"]) == (0.5, 0.5, 0.5)
    assert g["per_task"]["math"]["gain"] == 1.0 and g["per_task"]["words"]["gain"] == 0.0
    with pytest.raises(ValueError, match="same prompts in the same order"):
        gain(before, after[::-1])
