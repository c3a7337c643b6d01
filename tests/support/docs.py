"""The documentation pages, their runnable command blocks, and the fresh directory they run in."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^```bash runnable\n(.*?)^```$", re.S | re.M)


def fresh_directory(d: Path) -> Path:
    """``d``/work with the project's entry points linked in, as a user's checkout has them."""
    work = d / "work"
    work.mkdir()
    for name in ("train.py", "chat.py", "training", "inference", "applications", "scripts"):
        (work / name).symlink_to(ROOT / name)
    return work


def run_block(block: str, work: Path) -> subprocess.CompletedProcess:
    """One command block run by bash in ``work``, with ``python`` this environment's interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
