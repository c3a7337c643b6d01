"""API keys: 401 without or with a wrong key on /v1, 200 with a right one (any of several, named), key
files read with file/line errors, and a non-loopback binding refused without a key."""

import pytest


@pytest.mark.slow
def test_chat_py_refuses_an_open_binding_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "chat.py"), "--model", "tiny", "--serve", "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "reachable from other machines" in r.stderr and "--no-auth" in r.stderr
    r = subprocess.run([sys.executable, str(root / "chat.py"), "--model", "tiny", "--serve", "--api-key-file",
                        str(tmp_path / "none.txt")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "none.txt: no such file" in r.stderr
