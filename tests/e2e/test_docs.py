"""The README and docs/: under 300 lines for the README, every local link resolves, and every command
block marked ```bash runnable runs as written (each file's blocks in order, in a fresh directory)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.docs import PAGES, ROOT, RUNNABLE


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if RUNNABLE.search(p.read_text())], ids=lambda p: p.name)
def test_runnable_commands_run_as_written(page, tmp_path):
    work, bin_dir = tmp_path / "work", Path(sys.executable).parent     # `python`: this environment's interpreter
    work.mkdir()
    for name in ("train.py", "chat.py", "training", "inference", "applications", "scripts"):
        (work / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1")
    for block in RUNNABLE.findall(page.read_text()):
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"{page.name}:\n{block}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
