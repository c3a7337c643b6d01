"""One typed configuration tree shared by every stage.

Each section is a dataclass; every field becomes one command-line flag (``--field_name`` and
``--field-name``), and DeepSpeed-Chat's flag names are accepted as written.  A YAML or JSON file
given with ``--config`` fills the tree first (sections or flat keys); flags given on the command
line win.  No stage declares arguments of its own: each stage owns the sections it reads
(``STAGE_SECTIONS``) and its command line takes those flags only, so a flag that a stage would
ignore stops it with argparse's error; a config file may hold any stage's keys (one file can serve
the whole pipeline).

The sections live by role: ``common.py`` (what every stage reads), ``stages.py`` (stages 1 and 2),
``rl.py`` (stage 3); ``fields.py`` has the field maker and ``ConfigError``; this file the whole tree, its
checks (``Config.validate``), which stage owns which section, and walks over the leaves.

This package is a leaf: it imports nothing else of the project. The rules that depend on an algorithm or a
reward source live with them (``rl/advantages.py``'s ``check``, ``reward_sources.check``); the command
line (``arguments.py``) converts flag and file values into it and applies every rule when it builds a
``Config``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import (CheckpointConfig, DataConfig, DeepSpeedConfig, DSChatConfig, LogConfig, LoraConfig,
                     ModelConfig, OptimConfig)
from .fields import ConfigError, parse_split
from .rl import (CriticConfig, CurriculumConfig, EMAConfig, KLConfig, PolicyLossConfig, PtxConfig, RLConfig,
                 RewardSourcesConfig, RolloutConfig, ToolsConfig)
from .stages import DPOConfig, RewardModelConfig, SFTConfig

__all__ = ["CheckpointConfig", "Config", "ConfigError", "CriticConfig", "CurriculumConfig", "DataConfig", "DPOConfig",
           "DeepSpeedConfig", "DSChatConfig", "EMAConfig", "FIELD_STAGES", "KLConfig", "LogConfig", "LoraConfig",
           "ModelConfig", "OptimConfig", "PolicyLossConfig", "PtxConfig", "RLConfig", "RewardModelConfig",
           "RewardSourcesConfig", "RolloutConfig", "SFTConfig", "SHARED", "STAGE_SECTIONS", "ToolsConfig",
           "all_fields", "flat_settings", "inert_flags", "owners", "parse_split", "section", "top_sections"]


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ds: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RewardModelConfig = field(default_factory=RewardModelConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    rewards: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    dschat: DSChatConfig = field(default_factory=DSChatConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def validate(self) -> "Config":
        d, o = self.data, self.optim
        parse_split(d.data_split)
        for name in ("max_seq_len", "max_prompt_seq_len", "max_answer_seq_len"):
            if getattr(d, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(d, name)}")
        if d.max_prompt_seq_len >= d.max_seq_len:
            raise ConfigError(f"max_prompt_seq_len ({d.max_prompt_seq_len}) must be smaller than "
                              f"max_seq_len ({d.max_seq_len}) so that answers fit")
        if not 0.0 <= d.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {d.eval_fraction}")
        if not 0.0 <= d.rl_only_mix <= 1.0:
            raise ConfigError(f"rl_only_mix must be in [0, 1], got {d.rl_only_mix}")
        if d.rl_only_mix > 0 and not d.rl_only_data_path:
            raise ConfigError(f"--rl_only_mix {d.rl_only_mix} mixes in the prompts of --rl_only_data_path: give it")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "num_train_epochs"):
            if getattr(o, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(o, name)}")
        if o.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {o.learning_rate}")
        if self.lora.lora_dim < 0:
            raise ConfigError(f"lora_dim must be >= 0, got {self.lora.lora_dim}")
        if self.lora.only_optimize_lora and self.lora.lora_dim == 0:
            raise ConfigError("only_optimize_lora needs lora_dim > 0")
        if not 0.0 <= self.dpo.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.dpo.label_smoothing}")
        if self.dpo.dpo_loss != "sigmoid" and self.dpo.label_smoothing:
            raise ConfigError(f"label_smoothing applies to the sigmoid DPO loss only, not {self.dpo.dpo_loss} "
                              "(drop --label_smoothing or use --dpo_loss sigmoid)")
        if self.dpo.beta <= 0:
            raise ConfigError(f"beta must be positive, got {self.dpo.beta}")
        if self.ckpt.save_interval < 0 or self.ckpt.keep_checkpoints < 1 or self.ckpt.max_nonfinite < 1:
            raise ConfigError("save_interval must be >= 0, keep_checkpoints and max_nonfinite >= 1")
        p, r = self.rl, self.rewards
        if p.rollout.num_samples_per_prompt < 1:
            raise ConfigError(f"num_samples_per_prompt must be >= 1, got {p.rollout.num_samples_per_prompt}")
        if p.kl.adaptive_kl and p.kl.kl_coef <= 0:
            raise ConfigError("adaptive_kl scales kl_coef, which is 0 here: set --kl_coef > 0 or drop --adaptive_kl")
        if p.kl.adaptive_kl and p.kl.kl_target <= 0:
            raise ConfigError(f"kl_target must be positive, got {p.kl.kl_target}")
        if p.curriculum.prompt_curriculum and (p.rollout.num_samples_per_prompt < 2 or not self.data.balance_key):
            raise ConfigError("prompt_curriculum weighs the groups named by --balance_key by the spread of the "
                              "answers to one prompt: set --balance_key (e.g. task) and num_samples_per_prompt >= 2")
        if p.rollout.overlong_buffer_len < 0 or p.rollout.overlong_buffer_len >= self.data.max_answer_seq_len:
            raise ConfigError(
                f"overlong_buffer_len must be in [0, max_answer_seq_len = {self.data.max_answer_seq_len}), "
                f"got {p.rollout.overlong_buffer_len}"
            )
        if p.rollout.dynamic_sampling_max_batches < 1:
            raise ConfigError(
                f"dynamic_sampling_max_batches must be >= 1, got {p.rollout.dynamic_sampling_max_batches}"
            )
        k = p.curriculum
        if not (0 < k.curriculum_decay <= 1) or k.curriculum_prior < 0 or k.curriculum_floor < 0:
            raise ConfigError(f"curriculum_decay must be in (0, 1], curriculum_prior and curriculum_floor >= 0, got "
                              f"{k.curriculum_decay}, {k.curriculum_prior} and {k.curriculum_floor}")
        if r.reward_weights and len(r.reward_weights) != len(r.reward):
            raise ConfigError(f"{len(r.reward_weights)} reward_weights for {len(r.reward)} reward sources "
                              f"({' '.join(r.reward)})")
        if not r.reward:
            raise ConfigError("reward: give at least one reward source")
        if r.reward_refresh_interval < 0:
            raise ConfigError(f"reward_refresh_interval must be >= 0, got {r.reward_refresh_interval}")
        if r.reward_refresh_interval:
            if r.reward_refresh_center < 0:
                raise ConfigError(f"reward_refresh_center must be >= 0, got {r.reward_refresh_center}")
            if r.reward_refresh_labels <= 0 or r.reward_refresh_steps <= 0 or r.reward_refresh_batch < 2:
                raise ConfigError("reward_refresh_labels and reward_refresh_steps must be > 0 and reward_refresh_batch "
                                  f">= 2, got {r.reward_refresh_labels}, {r.reward_refresh_steps} and "
                                  f"{r.reward_refresh_batch}")
            if p.rollout.num_samples_per_prompt < 2:
                raise ConfigError("reward_refresh_interval ranks several answers to one prompt: set "
                                  "num_samples_per_prompt >= 2")
        m = self.rm
        if m.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt must be >= 2 (answers are compared), got {m.samples_per_prompt}")
        if m.label_budget < 0 or m.on_policy_eval_prompts < 0 or m.policy_max_new_tokens <= 0:
            raise ConfigError("label_budget and on_policy_eval_prompts must be >= 0, policy_max_new_tokens > 0")
        if p.loss.rollout_is_cap <= 0:
            raise ConfigError(f"rollout_is_cap must be positive, got {p.loss.rollout_is_cap}")
        if m.pointwise_weight < 0 or m.pointwise_batch < 1:
            raise ConfigError(f"pointwise_weight must be >= 0 and pointwise_batch >= 1, got {m.pointwise_weight} and "
                              f"{m.pointwise_batch}")
        if m.pointwise_weight > 0 and not m.pairs_from_policy:
            raise ConfigError("pointwise_weight trains on labelled answers of the policy: add --pairs_from_policy")
        if not 0.0 <= m.policy_pair_weight <= 1.0:
            raise ConfigError(f"policy_pair_weight must be in [0, 1], got {m.policy_pair_weight}")
        if m.policy_temperature <= 0:
            raise ConfigError(f"policy_temperature must be positive, got {m.policy_temperature}")
        if self.dschat.inference_tp_size != 1:
            raise ConfigError(f"--inference_tp_size {self.dschat.inference_tp_size}: tensor-parallel generation is not "
                              f"offered; every rank generates its own rollouts (use 1, or drop the flag)")
        if p.rollout.print_answers_interval < 1 or p.test_stop_step < 0 or p.ptx.preprocessing_num_workers < 0:
            raise ConfigError("print_answers_interval must be >= 1, test_stop_step and preprocessing_num_workers >= 0")
        if p.enable_test_mode and p.test_stop_step < 1:
            raise ConfigError("enable_test_mode stops stage 3 after --test_stop_step iterations: set it >= 1")
        if p.ptx.unsupervised_dataset_name and p.ptx.unsup_coef <= 0:
            raise ConfigError(
                f"--unsupervised_dataset_name {p.ptx.unsupervised_dataset_name} feeds the unsupervised loss, "
                f"whose weight --unsup_coef is 0: set it (InstructGPT and DeepSpeed-Chat use 27.8)"
            )
        t = self.tools
        if t.max_turns < 1 or t.max_rollout_tokens < 0 or t.tool_timeout <= 0 or t.max_tool_output_tokens < 1 \
                or t.tool_workers < 0:
            raise ConfigError(
                f"max_turns and max_tool_output_tokens must be >= 1, tool_timeout > 0, max_rollout_tokens "
                f"and tool_workers >= 0, got {t.max_turns}, {t.max_tool_output_tokens}, {t.tool_timeout}, "
                f"{t.max_rollout_tokens} and {t.tool_workers}"
            )
        if t.tools and t.environment:
            raise ConfigError(f"--environment {t.environment} replaces the tool loop of --tools "
                              f"{' '.join(t.tools)}: give one (an environment runs its own tools)")
        if self.log.eval_iters < 0:
            raise ConfigError(f"eval_iters must be >= 0, got {self.log.eval_iters}")
        if self.ds.deepspeed_config and not Path(self.ds.deepspeed_config).is_file():
            raise ConfigError(f"deepspeed_config file not found: {self.ds.deepspeed_config}")
        return self


SHARED = ("data", "model", "lora", "optim", "ds", "log", "ckpt", "dschat")
STAGE_SECTIONS = {
    "sft": SHARED + ("sft",),
    "reward": SHARED + ("rm",),
    "dpo": SHARED + ("dpo",),
    "rl": SHARED + ("rl", "rewards", "tools"),
}
# fields whose owners differ from their section's: online DPO (stage 3) uses the DPO temperature;
# only stage 3 generates answers; stage 3's reward-model refreshes label and pair as stage 2 does
FIELD_STAGES = {
    "beta": ("dpo", "rl"),
    "tools": ("sft", "rl"),
    "max_answer_seq_len": ("rl",),
    "judge_template": ("reward", "rl"),
    "labeller": ("reward", "rl"),
    "pair_rule": ("reward", "rl"),
    # DeepSpeed-Chat flags: the stages whose DeepSpeed-Chat parser has them (DPO takes stage 1's and 2's)
    "disable_dropout": ("reward", "dpo"),
    "eval_iters": ("reward",),
    "print_loss": ("sft", "reward", "dpo"),
    "compute_fp32_loss": ("sft", "reward", "dpo", "rl"),
    "no_bf16_to_fp32_loss": ("reward", "dpo"),
    "eot_token": ("sft", "dpo"),
    "num_padding_at_beginning": ("reward", "dpo", "rl"),
    **{
        name: ("rl",)
        for name in (
            "enable_hybrid_engine",
            "unpin_actor_parameters",
            "release_inference_cache",
            "inference_tp_size",
            "tp_gather_partition_size",
            "enable_mixed_precision_lora",
            "align_overflow",
        )
    },
}


def inert_flags(cfg: "Config") -> list[str]:
    """'--flag [value] has no effect here: why' for each DeepSpeed-Chat flag of ``cfg.dschat`` set away
    from its default."""
    default, out = DSChatConfig(), []
    for f in dataclasses.fields(DSChatConfig):
        value = getattr(cfg.dschat, f.name)
        if value != getattr(default, f.name):
            shown = "" if value is True else f" {value}"
            out.append(f"--{f.name}{shown} has {f.metadata['help']}")
    return out


def owners(section: str, name: str) -> tuple[str, ...]:
    """The stages that read config field ``name`` of ``section`` (a path such as ``rl.kl``)."""
    top = section.split(".")[0]
    return FIELD_STAGES.get(name) or tuple(st for st, secs in STAGE_SECTIONS.items() if top in secs)


# --------------------------------------------------------------------------- the tree's leaves

def top_sections(cfg_cls=Config):
    hints = typing.get_type_hints(cfg_cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cfg_cls)]


def _is_section(typ) -> bool:
    return dataclasses.is_dataclass(typ)


def all_fields():
    """(section path, field, python type) for every leaf (``("rl.kl", kl_coef, float)``), depth first;
    leaf names are unique across the tree (each is one flag)."""
    out, seen = [], {}

    def walk(path: str, cls) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if _is_section(hints[f.name]):
                walk(f"{path}.{f.name}", hints[f.name])
                continue
            if f.name in seen:
                raise AssertionError(f"config field {f.name} in both {seen[f.name]} and {path}")
            seen[f.name] = path
            out.append((path, f, hints[f.name]))
    for sec_name, sec_cls in top_sections():
        walk(sec_name, sec_cls)
    return out


def section(cfg: "Config", path: str):
    """The section object at ``path`` (``rl.kl`` -> ``cfg.rl.kl``)."""
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def flat_settings(cfg: "Config") -> dict[str, Any]:
    """{"section.path.field": value} for every leaf."""
    return {f"{path}.{f.name}": getattr(section(cfg, path), f.name) for path, f, _ in all_fields()}
