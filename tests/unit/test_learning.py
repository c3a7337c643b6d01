"""The learning tests' yardstick on hand values: the starting model's exact probability of the learnable
rule's answers (the runs that must raise it are in ``tests/engines/test_learning.py``)."""

from __future__ import annotations

from support.learning import blank_probability


def test_starting_point_is_below_the_bound():
    p0 = blank_probability("tiny")
    assert 0.05 < p0 < 0.2, p0
