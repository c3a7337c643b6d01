


import pytest


def test_model_check_accepts_aliases_directories_and_cached_hub_ids(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from training.step1_supervised_finetuning.main import main as sft
    from training.utils.model.loader import model_problem

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("abc123")
    assert model_problem("tiny") is None and model_problem("org/cached") is None
    assert "not in the Hugging Face cache" in model_problem("org/other")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in model_problem(str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="--model_name_or_path 'org/other': not an alias"):
        sft(["--model_name_or_path", "org/other", "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_lock_left_by_a_killed_op_build_is_removed_and_a_live_or_fresh_one_is_kept(tmp_path, capsys):
    import os
    import time

    from training.utils.distributed import clear_stale_build_lock

    op = tmp_path / "deepspeed_shm_comm"
    op.mkdir()
    assert clear_stale_build_lock(str(op)) is False                      # no lock: nothing to do
    lock = op / "lock"
    lock.write_bytes(b"")
    assert clear_stale_build_lock(str(op)) is False and lock.exists()   # 0 s old: a build may be running
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with open(lock, "rb"):                                               # an hour old but held open: a live build
        assert clear_stale_build_lock(str(op)) is False and lock.exists()
    assert capsys.readouterr().out == ""
    assert clear_stale_build_lock(str(op)) is True and not lock.exists()
    assert f"removed {lock}: a build lock 60 min old" in capsys.readouterr().out
