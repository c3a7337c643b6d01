"""Learning tests: every stage-3 algorithm (and DPO) must raise a trivially learnable reward.

The rule: an answer scores 1.0 when its (single) token is blank, i.e. a whitespace or special
token, 0.0 otherwise (ReMax, whose baseline is the greedy answer, gets the opposite rule).
The seeded random ``tiny`` model puts about 15% of its first-token
probability on blank tokens at temperature 0.12 (its newline logit stands out), so the reward
starts low but is reachable by sampling. The test measures that probability exactly, with the
starting and the trained actor, instead of relying on a few noisy rollouts: below 0.2 before,
above a bound after N updates. A sign error in an advantage or a loss, a ratio taken against the
wrong log-probs, or an update that never reaches the weights fails these tests.
"""

from __future__ import annotations

from support.learning import blank_probability


def test_starting_point_is_below_the_bound():
    p0 = blank_probability("tiny")
    assert 0.05 < p0 < 0.2, p0
