import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_prints_stage_commands(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--actor-model", "1.3b",
                          "--actor-zero-stage", "3", "--output-dir", str(tmp_path), "--lora_dim", "8",
                          "--deployment-type", "single_node", "--num-processes", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "-m deepspeed.launcher.runner --num_gpus 2" in out
    assert "--model_name_or_path 1.3b" in out and "--zero_stage 3" in out and "--lora_dim 8" in out
    assert f"--output_dir {tmp_path}/actor-models/1.3b" in out


@pytest.mark.slow
def test_multi_node_needs_hostfile(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--deployment-type", "multi_node",
                        "--hostfile", str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode != 0 and "needs a hostfile" in r.stderr


@pytest.mark.slow
def test_train_py_tiny_end_to_end(readme_quickstart, tmp_path):
    """The README's quick start (``readme_quickstart``: train.py on tiny through the three stages, 8 evaluation
    prompts), then GRPO's stage 3 alone on its SFT model."""
    work, block, r = readme_quickstart
    assert "train.py --actor-model tiny --reward-model tiny --output-dir output/tiny --eval-prompts 8" in block
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shutil.copytree(work / "output" / "tiny", tmp_path, symlinks=True, dirs_exist_ok=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["pass_rate"]) == {"base", "sft", "ppo"} and report["held_out_prompts"] == 8
    rm_summary = json.loads((tmp_path / "reward-models" / "tiny" / "summary.json").read_text())
    assert report["reward_model"]["held_out_pair_accuracy"] == rm_summary["final_eval"]["acc"]
    assert report["reward_model"]["synthetic_pairs"] == rm_summary["data"]["train"]["kept"] > 0
    # the closing evaluation: the test set's first 8 prompts, every rate inside its interval, gains paired
    assert report["eval_set"] == "test" and set(report["pass_rate_ci"]) == {"base", "sft", "ppo"}
    for name, (lo, hi) in report["pass_rate_ci"].items():
        assert 0.0 <= lo <= report["pass_rate"][name] <= hi <= 1.0
    assert {k: g["over"] for k, g in report["gain"].items()} == {"sft": "base", "ppo": "sft"}
    assert report["gain"]["ppo"]["gain"] == pytest.approx(report["pass_rate"]["ppo"] - report["pass_rate"]["sft"])
    assert "final_kl" in report["ppo"] and set(report["stage_seconds"]) == {"1", "2", "3"}
    # the tiny preset, like the main job's, trains the reward model on comparisons of the SFT model's answers
    rm = report["reward_model"]
    assert rm["labeller"] == "checker" and rm["labels"] == 32 and rm["eval_labels"] == 8 * 4
    assert "on_policy_auc" in rm and "on_policy_within_prompt_auc" in rm
    assert (tmp_path / "reward-models" / "tiny" / "policy_pairs.jsonl").is_file()
    gold = report["ppo"]["proxy_vs_gold"]           # the reward and the checker's verdicts, per iteration
    assert gold["iterations"] == [1, 2, 3, 4] and len(gold["reward"]) == 4 and all(0 <= g <= 1 for g in gold["gold"])
    for step in (1, 2, 3):
        assert (tmp_path / "logs" / "latest" / f"step{step}.log").is_file()
    page = (tmp_path / "report.html").read_text()
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert f"<td>ppo</td><td class=\"num\">{report['pass_rate']['ppo']:.3f}</td>" in page
    assert page.count('<td class="pass">') + page.count('<td class="fail">') == 3 * 8
    assert page.count('<td class="pass">') == sum(a["pass"] for m in answers.values() for a in m)
    assert page.count("data:image/png;base64,") == len(report["plots"]) > 0
    assert (tmp_path / "actor-models" / "tiny" / "model.safetensors").is_file()
    assert (tmp_path / "reward-models" / "tiny" / "model.safetensors").is_file()
    for part in ("actor", "critic"):
        assert (tmp_path / "step3-models" / "tiny" / part / "model.safetensors").is_file()
    # GRPO with the checker reward on the same SFT model: stage 3 only, no reward model, no critic
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--algo", "grpo", "--step", "3", "--actor-model",
                        "tiny", "--output-dir", str(tmp_path), "--data_output_path", str(tmp_path / "cache"),
                        "--eval-prompts", "8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["pass_rate"]) == {"base", "sft", "grpo"} and "final_kl" in report["grpo"]   # SFT: its start
    grpo = tmp_path / "step3-models" / "tiny-grpo"
    assert (grpo / "actor" / "model.safetensors").is_file() and not (grpo / "critic").exists()
    assert (
        "reward: 1 x rule:training.utils.data.checker:reward"
        in (tmp_path / "logs" / "latest" / "step3.log").read_text()
    )


@pytest.mark.slow
def test_stage3_alone_names_the_missing_directory(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--step", "3", "--actor-model", "tiny",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert (
        r.returncode != 0 and "needs the SFT model" in r.stderr and str(tmp_path / "actor-models" / "tiny") in r.stderr
    )


@pytest.mark.slow
def test_dpo_algo_plans_sft_then_dpo(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--algo", "dpo", "--actor-model", "tiny",
                          "--output-dir", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "dpo_main.py" in out and "step3" not in out and "tiny-dpo.yaml" in out
    assert f"--model_name_or_path {tmp_path}/actor-models/tiny " in out


@pytest.mark.slow
def test_critic_free_algos_plan_sft_then_stage3(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--algo", "rloo", "--output-dir",
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("stage ")]      # then its settings, indented
    assert [ln.split(":")[0] for ln in lines] == ["stage 1", "stage 3"]
    assert "  preset smollm2-grpo (measured on 2 CPU cores (BENCHMARKS.md))" in out
    assert "smollm2-grpo.yaml" in lines[1] and "--algo rloo" in lines[1]
    assert f"--output_dir {tmp_path}/step3-models/smollm2-135m-rloo " in lines[1]
    assert "--reward_model_name_or_path" not in lines[1]          # no stage 2 output: rule reward only


@pytest.mark.slow
def test_failing_stage_reports_log_and_fix(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": ""}\n')
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--output-dir",
                        str(tmp_path / "o"), "--data_path", str(bad), "--data_output_path", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "stage 1 failed" in r.stderr and "step1.log" in r.stderr and "fix the data" in r.stderr
    assert "row 1: field 'chosen': empty" in (tmp_path / "o" / "logs" / "latest" / "step1.log").read_text()


@pytest.mark.slow
def test_single_node_two_cpu_ranks_train_the_same_model(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--step", "1", "--actor-model", "tiny",
                        "--deployment-type", "single_node", "--num-processes", "2", "--output-dir", str(tmp_path),
                        "--data_output_path", str(tmp_path / "cache"), "--max_steps", "3", "--eval-prompts", "4",
                        "--zero_stage", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "actor-models" / "tiny" / "summary.json").read_text())
    sums = summary["rank_param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1] and sums[0] > 0
    log = (tmp_path / "logs" / "latest" / "step1.log").read_text()
    assert "2 rank(s)" in log


@pytest.mark.slow
def test_stage_scripts_run_on_their_own(tmp_path):
    env = {**os.environ, "MODEL": "tiny", "OUTPUT": str(tmp_path), "PYTHON": sys.executable}
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "single_gpu" / "run_step1.sh"), "--max_steps", "2",
                        "--data_output_path", str(tmp_path / "cache"), "--disable_tqdm"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "actor-models" / "tiny" / "model.safetensors").is_file()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "multi_node" / "run_step2.sh")], capture_output=True, text=True,
                       env={**env, "HOSTFILE": str(tmp_path / "none")})
    assert r.returncode != 0 and "multi_node needs a hostfile" in r.stderr     # train.py's check, before any stage


@pytest.mark.slow
def test_unknown_model_stops_in_seconds_with_one_message_and_touches_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "no-such-org/no-such-model",
                        "--output-dir", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "--actor-model 'no-such-org/no-such-model'" in r.stderr and "not in the Hugging Face cache" in r.stderr
    assert "huggingface-cli download no-such-org/no-such-model" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()                      # no logs, no half-made model directory
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--reward-model",
                        str(tmp_path / "missing"), "--output-dir", str(out)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode != 0 and f"--reward-model '{tmp_path / 'missing'}'" in r.stderr and not out.exists()


@pytest.mark.slow
def test_misspelt_flag_or_config_key_stops_before_any_stage(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--learning_rat", "3",
                        "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown flag --learning_rat: not a flag of train.py or of any stage" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rat: 0.001\n")
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--config", str(bad),
                        "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and f"stage 1: {bad}: unknown key 'optim.learning_rat'" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--data_path",
                        str(tmp_path / "nope.jsonl"), "--output-dir", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and f"stage 1: data path '{tmp_path / 'nope.jsonl'}': no such file" in r.stderr
    assert not out.exists()
    # a stage on its own: one line, exit 2, no traceback
    r = subprocess.run([sys.executable, str(ROOT / "training" / "step1_supervised_finetuning" / "main.py"),
                        "--model_name_or_path", "tiny", "--config", str(bad), "--output_dir", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        f"error: ConfigError: {bad}: unknown key 'optim.learning_rat'" and "Traceback" not in r.stderr


@pytest.mark.slow
def test_flags_reach_only_the_stages_that_own_them(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--actor-model", "tiny", "--output-dir",
                        str(tmp_path), "--kl_coef", "0.02", "--rm_loss", "per_token", "--seed", "5", "--beta", "0.3"],
                       capture_output=True, text=True, check=True, timeout=120).stdout
    cmds = {int(line.split(":")[0].split()[1]): line for line in r.splitlines() if line.startswith("stage ")}
    assert set(cmds) == {1, 2, 3} and all("--seed 5" in c for c in cmds.values())
    assert "--kl_coef 0.02" in cmds[3] and "--beta 0.3" in cmds[3] and "--rm_loss" not in cmds[3]
    assert "--rm_loss per_token" in cmds[2] and "--kl_coef" not in cmds[2] and "--beta" not in cmds[2]
    assert "--kl_coef" not in cmds[1] and "--rm_loss" not in cmds[1] and "--beta" not in cmds[1]
    # a flag whose stage is not in the run stops it, naming the stage
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--dry-run",
            "--actor-model",
            "tiny",
            "--step",
            "1",
            "--output-dir",
            str(tmp_path),
            "--kl_coef",
            "0.02",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode != 0
        and "--kl_coef is a flag of the rl stage, which this run does not include (--step 1" in r.stderr
    )
    # a stage on its own refuses a flag it would ignore, as argparse does
    r = subprocess.run([sys.executable, str(ROOT / "training" / "step1_supervised_finetuning" / "main.py"),
                        "--model_name_or_path", "tiny", "--kl_coef", "0.1", "--output_dir", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unrecognized arguments: --kl_coef 0.1" in r.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_help_states_the_pass_through_rule_and_first_op_build_is_announced(tmp_path, monkeypatch, capsys):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert "Flags not listed below go to the stages that own them" in r.stdout
    assert "step1_supervised_finetuning/main.py --help" in r.stdout
    from training.utils.distributed import announce_op_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    announce_op_build()                    # nothing built there yet: one line says what the wait is
    assert "building DeepSpeed's CPU communication op once" in capsys.readouterr().out
    built = tmp_path / "ext" / "deepspeed_shm_comm"
    built.mkdir(parents=True, exist_ok=True)
    (built / "deepspeed_shm_comm.so").write_bytes(b"")
    announce_op_build()
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_labelling_flags_reach_their_stages_and_export_stops_after_stage_2(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--actor-model", "tiny", "--output-dir",
                        str(tmp_path), "--labeller", "judge:tiny", "--label_budget", "64", "--judge", "checker"],
                       capture_output=True, text=True, check=True, timeout=120).stdout
    cmds = {int(line.split(":")[0].split()[1]): line for line in r.splitlines() if line.startswith("stage ")}
    assert "--labeller judge:tiny" in cmds[2] and "--label_budget 64" in cmds[2] and "--judge " not in cmds[2]
    # the labeller also labels stage 3's reward-model refreshes (--reward_refresh_interval); the budget is stage 2's
    assert "--judge checker" in cmds[3] and "--labeller judge:tiny" in cmds[3] and "--label_budget" not in cmds[3]
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run", "--actor-model", "tiny", "--output-dir",
                        str(tmp_path), "--export_for_labelling", str(tmp_path / "todo.jsonl")],
                       capture_output=True, text=True, check=True, timeout=120).stdout
    cmds = [line for line in r.splitlines() if line.startswith("stage ")]
    assert [c.split(":")[0] for c in cmds] == ["stage 1", "stage 2"] and "stage 3 is not run" in r
