"""The import graph: no cycles between modules or packages; the config tree and the maths are leaves."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


spec = importlib.util.spec_from_file_location("layers", ROOT / "scripts" / "dev" / "layers.py")


layers = importlib.util.module_from_spec(spec)


spec.loader.exec_module(layers)


def test_no_import_cycles():
    by_file, by_room = layers.graphs()
    assert len(by_file) > 60 and "training/utils/rl/" in by_room
    assert layers.cycles(by_file) == [] and layers.cycles(by_room) == []


def test_leaves_import_nothing_above_them():
    by_file, _ = layers.graphs()
    config = {f for f in by_file if f.startswith("training/utils/config/")}
    assert len(config) == 5 and all(by_file[f] <= config for f in config)      # the tree imports only itself
    assert by_file["training/utils/losses.py"] == set()
    assert by_file["training/utils/rl/maths.py"] == set()
    assert by_file["training/utils/faults.py"] == {"training/utils/config/__init__.py"}
    # the algorithm registry is read by the command line, never by the config tree
    assert "training/utils/rl/advantages.py" in by_file["training/utils/arguments.py"]


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert layers.cycles(g) == [["a", "b", "c"]]
