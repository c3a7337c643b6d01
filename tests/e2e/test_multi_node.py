"""Two nodes on one machine through DeepSpeed's own launcher without ssh (one launcher per node,
gloo on 127.0.0.1): the same weights as two ranks on one node, kill-and-resume, and the mistakes
that must end every node with one message instead of a hang."""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


ENV = {k: v for k, v in os.environ.items()
       if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK")}


def _digest(path: Path) -> str:
    from safetensors.torch import load_file

    w = load_file(str(path))
    return hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()


def _nodes(cmds, envs=None, timeout=300):
    """Start one process per node at once; (return code, output) of each."""
    procs = [subprocess.Popen(c, cwd=ROOT, env={**ENV, **(e or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c, e in zip(cmds, envs or [None] * len(cmds))]
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]


def _train(out, *extra, node=None, port=29600):
    cmd = [sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--reward-model", "tiny", "--output-dir",
           str(out), "--data_output_path", str(out.parent / "cache"), "--max_steps", "2", "--eval-prompts", "2",
           "--max_eval_samples", "4", "--num-processes", "1" if node is not None else "2", *extra]
    if node is None:
        return cmd + ["--deployment-type", "single_node"]
    return cmd[:2] + ["--deployment-type", "multi_node", "--no-ssh", "--num-nodes", "2", "--node-rank", str(node),
                      "--master-addr", "127.0.0.1", "--master-port", str(port), "--dist_timeout", "60"] + cmd[2:]


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_two_ranks_on_one_node(tmp_path):
    """SFT, reward model and PPO with the actor under ZeRO-3 as 2 nodes x 1 rank; PPO as 1 node x 2 ranks."""
    res = _nodes([_train(tmp_path / "nodes", "--zero_stage", "3", node=n, port=29610) for n in (0, 1)])
    assert [rc for rc, _ in res] == [0, 0], res[0][1][-3000:] + res[1][1][-3000:]
    assert "node 1: every stage finished; node 0 writes the report" in res[1][1]
    assert (tmp_path / "nodes" / "report.json").is_file()
    # stage 3 again on one node from the same SFT and reward models (stage 1 on one node: the test below)
    for d in ("actor-models", "reward-models"):
        shutil.copytree(tmp_path / "nodes" / d, tmp_path / "one" / d)
    r = subprocess.run(_train(tmp_path / "one", "--zero_stage", "3", "--step", "3"), cwd=ROOT, env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    for model in ("step3-models/tiny/actor", "step3-models/tiny/critic"):
        assert _digest(tmp_path / "nodes" / model / "model.safetensors") == \
            _digest(tmp_path / "one" / model / "model.safetensors"), model
    assert "2 rank(s)" in (tmp_path / "nodes" / "step3-models" / "tiny" / "training.log").read_text()


@pytest.mark.slow
def test_kill_one_node_then_resume_both_gives_the_uninterrupted_weights(tmp_path):
    """Through scripts/multi_node/run_step1.sh (NO_SSH=1): node 1 is killed after step 2 of 4, node 0
    stops on the broken connection; both rerun with --resume from the step-2 checkpoint."""
    env = {"MODEL": "tiny", "OUTPUT": str(tmp_path / "nodes"), "PYTHON": sys.executable, "NO_SSH": "1",
           "NUM_NODES": "2", "NUM_GPUS": "1", "MASTER_ADDR": "127.0.0.1"}
    flags = ["--max_steps", "4", "--save_interval", "2", "--data_output_path", str(tmp_path / "cache"),
             "--dist_timeout", "60", "--zero_stage", "2", "--disable_tqdm"]
    script = ["bash", str(ROOT / "scripts" / "multi_node" / "run_step1.sh")]
    envs = [{**env, "NODE_RANK": "0", "MASTER_PORT": "29620"},
            {**env, "NODE_RANK": "1", "MASTER_PORT": "29620"}]
    res = _nodes([script + flags, script + flags + ["--fault", "kill_after=2"]], envs)
    assert res[0][0] != 0 and res[1][0] != 0
    ckpts = tmp_path / "nodes" / "actor-models" / "tiny" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002"]
    envs = [{**e, "MASTER_PORT": "29621"} for e in envs]
    res = _nodes([script + flags + ["--resume"]] * 2, envs)
    assert [rc for rc, _ in res] == [0, 0], res[0][1][-3000:]
    log = (tmp_path / "nodes" / "actor-models" / "tiny" / "training.log").read_text()
    assert "resumed from" in log and "step-00000002" in log
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--step",
            "1",
            "--actor-model",
            "tiny",
            "--deployment-type",
            "single_node",
            "--num-processes",
            "2",
            "--output-dir",
            str(tmp_path / "one"),
            *flags[:2],
            *flags[4:6],
            *flags[8:10],
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert _digest(tmp_path / "nodes" / "actor-models" / "tiny" / "model.safetensors") == \
        _digest(tmp_path / "one" / "actor-models" / "tiny" / "model.safetensors")


@pytest.mark.slow
def test_a_missing_node_or_mismatched_flags_end_every_node_with_one_message(tmp_path):
    t0 = time.time()
    (rc, out), = _nodes([_train(tmp_path / "alone", "--step", "1", "--dist_timeout", "4", node=0, port=29630)])
    assert rc != 0 and time.time() - t0 < 90
    assert "the ranks did not all meet at 127.0.0.1:29630 within 4 s" in out and "1/2 clients joined" in out
    assert "likely fix: start every node with the same command" in out
    res = _nodes([_train(tmp_path / "mixed", "--step", "1", "--learning_rate", lr, node=n, port=29640)
                  for n, lr in ((0, "1e-3"), (1, "2e-3"))])
    for rc, out in res:
        assert (
            rc != 0 and "started with different configuration (optim.learning_rate: rank 0 0.001 / rank 1 0.002)" in out
        )
    assert not (tmp_path / "mixed" / "actor-models" / "tiny" / "model.safetensors").exists()
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--deployment-type", "multi_node", "--no-ssh",
                        "--num-nodes", "2", "--node-rank", "2", "--master-addr", "127.0.0.1", "--hostfile",
                        str(tmp_path / "none"), "--output-dir", str(tmp_path / "x"), "--dry-run"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "needs this node's rank in 0..1" in r.stderr
