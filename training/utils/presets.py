"""Which preset a stage starts from: the measured CPU presets (``training/configs/<smollm2|tiny>-*.yaml``)
or DeepSpeed-Chat's settings by model size and deployment (``training/configs/sizes.yaml``).

The model's size is its parameter count, counted on the meta device from its config (no weights are
read); a hub id that is not in the local cache is sized from its name (``opt-1.3b``, ``Llama-2-7b``)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .algorithms import AlgorithmSpec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = CONFIGS / "sizes.yaml"
CPU_MAX_PARAMS = 5e8        # up to this size a machine without a GPU keeps the measured presets
NEAR = 4.0                  # a row further than this factor in size gives way to another deployment's
FALLBACK = {"multi_node": ("single_node", "single_gpu"), "single_node": ("single_gpu",),
            "single_gpu": ("single_node",)}
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")


@dataclass
class ModelShape:
    params: float
    family: str             # "llama" for Llama-like decoders, else the config's model_type (opt, gpt2, ...)
    how: str                # "config" or "name"

    def text(self) -> str:
        return f"{self.params / 1e9:.2f}B parameters ({self.family}, from its {self.how})"


@dataclass
class Preset:
    name: str                       # e.g. "opt-1.3b single_gpu" or "smollm2-step1"
    source: str                     # where the values come from
    settings: dict = field(default_factory=dict)
    path: Optional[Path] = None     # the YAML file of a measured preset


def family_of(model_type: str) -> str:
    return "llama" if model_type in LLAMA_LIKE else model_type


def count_params(config) -> int:
    """Parameters of a causal LM built from ``config`` on the meta device (tied weights once)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_from_name(name: str) -> Optional[ModelShape]:
    """``facebook/opt-1.3b`` -> 1.3e9 (opt); ``meta-llama/Llama-2-7b-hf`` -> 7e9 (llama)."""
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)([mb])(?![a-z])", name.lower())
    if not m:
        return None
    low = name.lower()
    family = "llama" if any(f in low for f in LLAMA_LIKE) else "opt" if "opt" in low else "unknown"
    return ModelShape(float(m.group(1)) * (1e6 if m.group(2) == "m" else 1e9), family, "name")


def model_shape(name: str) -> Optional[ModelShape]:
    """The size and family of model ``name`` (alias, directory or hub id), or None when neither its
    config nor its name tells."""
    from transformers import AutoConfig

    from .model.loader import resolve

    try:
        src = resolve(name)
    except FileNotFoundError:
        return None
    if src.kind == "hf":
        try:
            config = AutoConfig.from_pretrained(src.path, local_files_only=True)
            return ModelShape(float(count_params(config)), family_of(config.model_type), "config")
        except (OSError, ValueError):
            return shape_from_name(src.path)
    return None


def _rows(step: int) -> dict:
    import yaml

    return yaml.safe_load(SIZES.read_text())[f"step{step}"]


def nearest(step: int, shape: ModelShape, deployment: str) -> tuple[dict, str]:
    """(row, deployment it was taken from) of the size table for ``step``: the nearest size within a
    factor NEAR in ``deployment``, of the model's family if one is, else of any family; then the same in
    the FALLBACK deployments; else the nearest size of ``deployment``."""
    table = _rows(step)

    def distance(row) -> float:
        return abs(math.log(float(row["params"]) / shape.params))

    for dep in (deployment, *FALLBACK[deployment]):
        near = [r for r in table.get(dep, []) if distance(r) <= math.log(NEAR)]
        near = [r for r in near if r["family"] == shape.family] or near
        if near:
            return min(near, key=distance), dep
    return min(table[deployment], key=distance), deployment


def measured(kind: str, step: int, alg: AlgorithmSpec) -> Preset:
    """The measured preset file of ``kind`` (smollm2 or tiny) for stage ``step`` of the algorithm ``alg``: the
    algorithm's own (``<kind>-<algo>.yaml``; one without a file shares its record's ``preset``: the offline
    losses ``<kind>-dpo.yaml``, the critic-free ones ``<kind>-grpo.yaml``), else the stage's
    (``<kind>-stepN.yaml``)."""
    if alg.own_preset(step):
        own = CONFIGS / f"{kind}-{alg.name}.yaml"
        name = f"{kind}-{alg.name}" if own.is_file() else f"{kind}-{alg.preset}"
    else:
        name = f"{kind}-step{step}"
    return Preset(name, "measured on 2 CPU cores (BENCHMARKS.md)", path=CONFIGS / f"{name}.yaml")


def choose(step: int, model: str, alg: AlgorithmSpec, deployment: str, gpu: bool,
           shape: Optional[ModelShape] = None) -> tuple[Preset, Optional[ModelShape]]:
    """The preset of stage ``step`` for ``model`` (the reward model's start for stage 2, the actor for
    1 and 3) and the shape it was chosen by (None when the choice did not need one)."""
    from .model.loader import SMOLLM2, TINY

    if model in TINY:
        return measured("tiny", step, alg), None
    if alg.own_preset(step) or model.lower() in (SMOLLM2, "smollm2"):
        return measured("smollm2", step, alg), None
    shape = shape or model_shape(model)
    if shape is None or (not gpu and shape.params <= CPU_MAX_PARAMS):
        return measured("smollm2", step, alg), shape
    row, dep = nearest(step, shape, deployment)
    return Preset(f"{row['model']} {dep}", f"DeepSpeed-Chat {row['source']}", dict(row["settings"])), shape


def preset_file(preset: Preset, out_dir: str | Path, step: int) -> Path:
    """The YAML file a stage reads ``preset`` from: a measured preset's own, or the size-table row
    written to ``<out_dir>/presets/stepN.yaml``."""
    if preset.path is not None:
        return preset.path
    import yaml

    path = Path(out_dir) / "presets" / f"step{step}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {preset.name}: {preset.source}\n" + yaml.safe_dump(preset.settings, sort_keys=False))
    return path
