"""Presets by model size and deployment: for OPT-1.3B, OPT-6.7B and Llama-2-7B model_shapes on each deployment
type, the chosen preset resolves to DeepSpeed-Chat's script values, field by field."""


import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_prints_each_setting_with_its_source(model_shapes, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("optim:\n  learning_rate: 3.0e-4\n")
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--dry-run",
            "--actor-model",
            str(model_shapes["opt-1.3b"]),
            "--step",
            "1",
            "--output-dir",
            str(tmp_path / "o"),
            "--config",
            str(user),
            "--zero_stage",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "preset opt-1.3b single_gpu (DeepSpeed-Chat step1_supervised_finetuning/training_scripts/opt/single_gpu/" \
           "run_1.3b.sh)" in out and "1.32B parameters (opt, from its config)" in out
    assert "    lora_dim = 128  [preset]" in out and "    gradient_accumulation_steps = 8  [preset]" in out
    assert f"    learning_rate = 0.0003  [config file {user}]" in out            # the user's file over the preset
    assert "    zero_stage = 1  [flag]" in out and "    seed = 1234  [default]" in out
    assert (tmp_path / "o" / "presets" / "step1.yaml").is_file()
