"""The installed ``speedchat`` command (pip install -e .): help, train and serve reach train.py and
chat.py with their flags, an unknown command exits 2 naming it."""

import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "speedchat"


pytestmark = pytest.mark.skipif(
    not EXE.is_file(), reason=f"{EXE} missing: scripts/setup.sh installs it (pip install -e .)"
)


def run(*args):
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300, cwd="/")


@pytest.mark.slow
def test_help_lists_the_commands_and_an_unknown_one_exits_2():
    r = run("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("train", "chat", "serve"))
    r = run("fly")
    assert r.returncode == 2 and "unknown command 'fly'" in r.stderr


@pytest.mark.slow
def test_train_is_train_py_and_serve_is_chat_py_serve(tmp_path):
    r = run("train", "--dry-run", "--actor-model", "tiny", "--output-dir", str(tmp_path), "--kl_coef", "0.02")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert [x.split(":")[0] for x in lines if x.startswith("stage ")] == ["stage 1", "stage 2", "stage 3"]
    assert "--kl_coef 0.02" in next(x for x in lines if x.startswith("stage 3"))
    r = run("serve", "--model", "tiny", "--host", "0.0.0.0")       # chat.py --serve's key check, before loading
    assert r.returncode != 0 and "reachable from other machines" in r.stderr
