"""The labelling store and its API: verdicts appended as stage 2's human-label JSONL (read back by
read_human_labels), the shown order undone, a restart offering only what has no verdict, two people
never given the same comparison, bad requests 4xx changing nothing, verdicts attributed to their key."""


import pytest


@pytest.mark.slow
def test_chat_py_stops_on_a_missing_comparisons_file_before_loading_a_model(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "chat.py"), "--model", "no-such-model", "--serve", "--label",
                        str(tmp_path / "todo.jsonl")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--label: labelling:" in r.stderr and "todo.jsonl: no such file" in r.stderr
