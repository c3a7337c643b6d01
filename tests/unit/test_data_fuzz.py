"""Property-based test: random rows and random bytes into every loader; the only failure allowed
is our DataError (which names the file, row and field)."""

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.utils.data.sources import HUB_ADAPTERS, DataError, Keys, _hub_rows, read_rows

N = 300  # examples per property


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)


values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", 3]),
                                 "content": st.text(max_size=20) | st.integers() | st.none()})


field = st.text(max_size=40) | values | st.lists(message, max_size=4)


row = st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "messages", "other"]), field, max_size=5)


any_row = row | values


WHERE = re.compile(r"(row \d+|line \d+|bad JSON|no rows|expected a JSON list)")


def _check(rows):
    for r in rows:
        assert r["prompt"] and all(isinstance(m["content"], str) for m in r["prompt"])
        if r["chosen"] is None:      # a prompt-only row (stage 3): no answer at all
            assert r["rejected"] is None
        else:
            assert isinstance(r["chosen"], str) and r["chosen"].strip()
        assert r["rejected"] is None or (isinstance(r["rejected"], str) and r["rejected"].strip())


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(any_row, max_size=6), jsonl=st.booleans())
def test_random_rows_load_or_raise_data_error(tmp_path, rows, jsonl):
    f = tmp_path / ("d.jsonl" if jsonl else "d.json")
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows))
    try:
        _check(read_rows(f, Keys()))
    except DataError as e:
        assert str(f) in str(e) and WHERE.search(str(e)), str(e)


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), jsonl=st.booleans())
def test_random_bytes_load_or_raise_data_error(tmp_path, data, jsonl):
    f = tmp_path / ("b.jsonl" if jsonl else "b.json")
    f.write_bytes(data)
    try:
        _check(read_rows(f, Keys()))
    except DataError as e:
        assert str(f) in str(e), str(e)


@settings(max_examples=N, deadline=None)
@given(name=st.sampled_from(sorted(HUB_ADAPTERS)),
       rows=st.lists(st.dictionaries(st.sampled_from(["prompt", "response", "chosen", "rejected", "question",
                                                      "answer_0", "answer_1", "score_0", "score_1", "history",
                                                      "human_ref_A", "human_ref_B", "labels"]), field, max_size=8),
                     max_size=4))
def test_random_hub_rows_load_or_raise_data_error(name, rows):
    adapter = HUB_ADAPTERS[name][0]
    try:
        _check(_hub_rows(rows, name, "train", adapter))
    except DataError as e:
        assert name in str(e) and "row" in str(e), str(e)
