"""scripts/bench/chat_load.py's collection comparison runs small: every mode's answers equal the reference (it
stops otherwise), the ratio is to the first mode's p95, and the collected files of the `on` mode exist."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_collection_modes_are_measured_against_the_first():
    spec = importlib.util.spec_from_file_location("chat_load", ROOT / "scripts" / "bench" / "chat_load.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--model", "tiny", "--requests", "6", "--max_tokens", "6", "--collect", "off", "on",
                      "compare", "--rounds", "2", "--clients", "2"])
    assert list(res["modes"]) == ["off", "on", "compare"] and res["rounds"] == 2
    assert res["modes"]["off"]["p95_vs_first"] == 1.0
    for m in res["modes"].values():
        assert 0 < m["p50_s"] <= m["p95_s"]
        assert m["p95_vs_first"] == pytest.approx(m["p95_s"] / res["modes"]["off"]["p95_s"], rel=0.05)  # 3 decimals
