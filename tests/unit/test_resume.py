"""Reliability: SIGKILL mid-stage and --resume, damaged checkpoints, non-finite losses/rewards."""

import json

from training.utils import checkpoint


def test_half_written_checkpoints_are_ignored(tmp_path):
    root = checkpoint.ckpt_root(tmp_path)
    good = root / "step-00000002"
    good.mkdir(parents=True)
    (good / "state.json").write_text("{}")
    (good / checkpoint.MANIFEST).write_text(json.dumps({"state.json": 2}))
    (root / ".tmp-step-00000006").mkdir()                       # killed while writing
    (root / "step-00000004").mkdir()                            # no manifest
    (root / "step-00000004" / "state.json").write_text("{}")
    assert checkpoint.latest(tmp_path) == good
    (good / "state.json").unlink()
    assert checkpoint.verify(good) == "missing file state.json" and checkpoint.latest(tmp_path) is None
