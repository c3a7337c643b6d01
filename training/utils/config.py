"""One typed configuration tree shared by every stage.

Each section is a dataclass; every field becomes one command-line flag (``--field_name`` and
``--field-name``), and DeepSpeed-Chat's flag names are accepted as written.  A YAML or JSON file
given with ``--config`` fills the tree first (sections or flat keys); flags given on the command
line win.  No stage declares arguments of its own: each stage owns the sections it reads
(``STAGE_SECTIONS``) and its command line takes those flags only, so a flag that a stage would
ignore stops it with argparse's error; a config file may hold any stage's keys (one file can serve
the whole pipeline).

This module is a leaf: it imports nothing of the project. The rules that depend on an algorithm or a
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
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value (flag or file entry) that cannot be used."""


def _f(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: Optional[tuple] = None,
       registry: str = "", sources: str = ""):
    """A field with its help, DeepSpeed-Chat aliases and choices; ``registry`` names the registry whose
    entries are the choices (``arguments.REGISTRIES``: filled when the command line is built); ``sources``
    names the role its reward-source or labeller specs play (``source_kinds.ROLES``: the help lists them)."""
    meta = {"help": help, "aliases": aliases, "choices": choices, "registry": registry, "sources": sources}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    data_path: list[str] = _f(["bundled"], "datasets: DeepSpeed-Chat names (Dahoas/rm-static, ...), "
                              "local/jsonfile, a .json/.jsonl file or a directory, or 'bundled'")
    data_split: str = _f("2,4,4", "relative sizes of the stage 1/2/3 slices of every dataset")
    sft_only_data_path: list[str] = _f([], "datasets used whole, and only, by stage 1")
    rl_only_data_path: list[str] = _f([], "prompts used whole, and only, by stage 3's training (a file, directory "
                                          "or collected:DIR, the conversations a server collected)")
    rl_only_mix: float = _f(0.0, "share of stage 3's training prompts drawn from --rl_only_data_path (its prompts "
                                 "repeated or sampled to it; 1: those only; 0: added once, as they are)")
    data_output_path: str = _f("~/.cache/speedchat/data", "cache directory for tokenised data")
    max_seq_len: int = _f(256, "maximum prompt+answer length in tokens (stages 1 and 2)")
    max_prompt_seq_len: int = _f(128, "maximum prompt length in tokens")
    max_answer_seq_len: int = _f(128, "maximum generated answer length in tokens (stage 3)")
    truncation: str = _f("truncate", "over-long prompts: keep their last tokens, or drop the row",
                         choices=("truncate", "drop"))
    prompt_key: str = _f("prompt", "JSON/JSONL key of the prompt")
    chosen_key: str = _f("chosen", "JSON/JSONL key of the preferred answer")
    rejected_key: str = _f("rejected", "JSON/JSONL key of the dispreferred answer")
    messages_key: str = _f("messages", "JSON/JSONL key of chat-format rows")
    eval_fraction: float = _f(0.05, "share held out for evaluation when a source has no eval split")
    template: str = _f("auto", "prompt format: the tokenizer's chat template, DeepSpeed-Chat's "
                       "' Human: ... Assistant:', or auto (template when the tokenizer has one)",
                       choices=("auto", "chat", "plain"))
    bundled_size: int = _f(4000, "rows generated for the bundled verifiable dataset")
    max_train_samples: int = _f(0, "cap on training rows per stage (0: no cap)")
    balance_key: str = _f("", "resample each training split so that every value of this row field is equally "
                               "frequent (rare groups repeated; e.g. 'task' for the bundled data, whose small "
                               "tasks are 2-4% of the rows); empty: the natural mix")
    dedup: bool = _f(True, "drop exact duplicate rows (same prompt, chosen and rejected) within each split, "
                           "and eval rows that also appear in training; the count is logged")
    max_eval_samples: int = _f(0, "cap on evaluation rows per stage (0: no cap)")
    num_workers: int = _f(0, "DataLoader worker processes")


@dataclass
class ModelConfig:
    model_name_or_path: str = _f("smollm2-135m", "hub id, local directory, DeepSpeed-Chat size alias "
                                 "(1.3b, 350m, ...), smollm2-135m or tiny",
                                 aliases=("--actor_model_name_or_path",))
    tokenizer_name_or_path: str = _f("", "tokenizer location when it differs from the model's")
    trust_remote_code: bool = _f(False, "allow model code from the hub (off unless asked)")
    dropout: float = _f(-1.0, "override the model's dropout probabilities (negative: keep)",
                        aliases=("--actor_dropout",))
    disable_dropout: bool = _f(False, "set every dropout probability to 0 (DeepSpeed-Chat's step-2 flag: the same as "
                                      "--dropout 0)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory",
                                      aliases=("--actor_gradient_checkpointing",))
    share_prompt_forward: bool = _f(
        True,
        "RL, DPO and reward-model forwards: a prompt shared by several rows (a group's "
        "answers, a chosen / rejected pair) runs once and its KV cache is reused (off: every "
        "row runs its prompt)",
    )


@dataclass
class LoraConfig:
    lora_dim: int = _f(0, "LoRA rank (0: no LoRA)", aliases=("--actor_lora_dim",))
    lora_alpha: float = _f(0.0, "LoRA alpha (0: equal to lora_dim, i.e. scaling 1 as in DeepSpeed-Chat)")
    lora_dropout: float = _f(0.0, "dropout on the LoRA branch")
    lora_module_name: str = _f("", "only linear layers whose name contains this are adapted "
                               "(DeepSpeed-Chat style, e.g. 'decoder.layers.'); empty: all linear "
                               "layers of the transformer blocks", aliases=("--actor_lora_module_name",))
    only_optimize_lora: bool = _f(False, "train the LoRA weights only (otherwise base weights train too)")
    lora_learning_rate: float = _f(5e-4, "learning rate of the LoRA weights", aliases=("--actor_lora_learning_rate",))


@dataclass
class OptimConfig:
    per_device_train_batch_size: int = _f(8, "micro-batch size per device for training")
    per_device_eval_batch_size: int = _f(8, "micro-batch size per device for evaluation")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    learning_rate: float = _f(2e-5, "peak learning rate", aliases=("--actor_learning_rate",))
    weight_decay: float = _f(0.0, "AdamW weight decay (not applied to biases and norms)",
                             aliases=("--actor_weight_decay",))
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.95, "AdamW beta2")
    lr_scheduler_type: str = _f("cosine", "learning-rate schedule after warm-up",
                                choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                         "constant_with_warmup"))
    num_warmup_steps: int = _f(0, "warm-up optimizer steps")
    num_train_epochs: int = _f(1, "passes over the training slice")
    max_steps: int = _f(0, "stop after this many optimizer steps (0: run the epochs)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)", aliases=("--gradient_clipping",))
    seed: int = _f(1234, "random seed for initialisation, shuffling and sampling")


@dataclass
class DeepSpeedConfig:
    zero_stage: int = _f(0, "ZeRO stage 0-3", aliases=("--actor_zero_stage",), choices=(0, 1, 2, 3))
    offload: bool = _f(False, "offload optimizer state (and with ZeRO-3 parameters) to CPU memory")
    dtype: str = _f("auto", "training precision; auto: bf16 on CUDA with bf16 support, else fp16 on "
                    "CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16", "fp16"))
    deepspeed_config: str = _f("", "a DeepSpeed JSON whose entries override the built config",
                               aliases=("--deepspeed_config_file", "--deepscale_config"))
    no_fused_kernels: bool = _f(False, "train with torch's plain AdamW instead of a fused kernel (DeepSpeed's "
                                       "fused Adam on CUDA, torch's fused AdamW on CPU)")
    local_rank: int = _f(-1, "set by the deepspeed launcher")
    dist_timeout: float = _f(1800.0, "seconds a rank waits for the others, at start-up (a node that is missing or "
                                     "cannot reach the master) and in every collective, before it stops with an error")


@dataclass
class LogConfig:
    output_dir: str = _f("output/actor-models/model", "where the model, logs and metrics go")
    overwrite: bool = _f(False, "train again into an output_dir that holds a finished run (replacing its model)")
    eval_interval: int = _f(0, "evaluate every N optimizer steps (0: at the end of each epoch only)")
    eval_at_start: bool = _f(True, "evaluate once before the first update (the step-0 point of the curves)")
    final_eval: bool = _f(True, "evaluate once after the last update (off: the stage ends with no evaluation; "
                          "train.py's closing pass-rate report is separate)")
    log_interval: int = _f(1, "write training metrics every N optimizer steps")
    enable_tensorboard: bool = _f(True, "write TensorBoard events")
    tensorboard_path: str = _f("", "TensorBoard directory (default: <output_dir>/tensorboard)")
    disable_tqdm: bool = _f(False, "no progress bars")
    print_loss: bool = _f(False, "log every micro-batch's loss with its epoch, step and rank (the progress bar and "
                                 "metrics.jsonl show the mean every --log_interval steps)")
    eval_iters: int = _f(0, "reward model: evaluate on at most this many eval batches (0: the whole eval slice)")
    plots: bool = _f(True, "write PNG training curves at the end")


@dataclass
class CheckpointConfig:
    save_interval: int = _f(0, "write a resumable checkpoint every N optimizer steps / RL iterations "
                               "(0: none); the end of a run is its saved model, not a checkpoint")
    keep_checkpoints: int = _f(2, "checkpoints kept (the oldest are removed)")
    resume: bool = _f(False, "continue from the newest intact checkpoint in output_dir/checkpoints")
    max_nonfinite: int = _f(3, "consecutive non-finite losses / rewards (each skipped) that stop the run")
    fault: str = _f("", "debug: inject faults, as the reliability tests do: kill_after=N (SIGKILL right after "
                        "optimizer step / RL iteration N), nan_at=A:B (the loss of those micro-batches, or the "
                        "rewards of those RL iterations, become NaN); comma-separated")


@dataclass
class SFTConfig:
    sft_loss_on: str = _f("answer", "tokens that carry the SFT loss: the answer only, or the whole "
                          "sequence (prompt included)", choices=("answer", "all"))


@dataclass
class RewardModelConfig:
    rm_loss: str = _f("pairwise", "reward-model loss: -logsigmoid(r_chosen - r_rejected) on the end "
                      "scores (InstructGPT), or DeepSpeed-Chat's per-token variant over the tokens "
                      "after the answers diverge", choices=("pairwise", "per_token"))
    pairs_from_policy: bool = _f(False, "also train on comparisons of the starting (SFT) model's own answers: K "
                                        "sampled per prompt of the reward slice, ranked by --labeller, turned into "
                                        "chosen/rejected pairs (InstructGPT's comparison data)")
    policy_model_name_or_path: str = _f("", "the policy whose answers are compared (empty: the model the reward "
                                            "model starts from, the SFT model in train.py's main job)")
    labeller: str = _f("checker", "who ranks the sampled answers: the bundled checker, a rule, an HTTP endpoint (the "
                                  "HTTP reward contract), a local causal LM comparing two answers (judge) or people "
                                  "(human: a filled-in --export_for_labelling file, or a chat.py --collect directory)",
                      sources="label")
    judge_template: str = _f("", "judge:MODEL's prompt, with {prompt}, {answer_a} and {answer_b} (empty: the "
                                 "built-in one asking which answer follows the instruction, reply A or B)")
    label_budget: int = _f(256, "labels to spend on policy comparisons: one per answer scored (rule, HTTP), one "
                                "per two answers compared (judge)")
    samples_per_prompt: int = _f(4, "answers sampled per prompt for the comparisons (K)")
    pair_rule: str = _f("all", "pairs of a prompt's ranked answers: all (every two that differ) or best_worst",
                        choices=("all", "best_worst"))
    policy_pair_weight: float = _f(0.5, "share of the training rows that are policy pairs (the policy pairs "
                                        "repeated or sampled to it; 1: policy pairs only)")
    pointwise_weight: float = _f(0.0, "with --pairs_from_policy: add this x a binary cross-entropy of sigmoid(score) "
                                      "against every labelled answer's label, so each label teaches (a correctness "
                                      "head; 0: pairs only, where a label counts when another answer disagrees)")
    pointwise_batch: int = _f(8, "labelled answers per step in the --pointwise_weight term")
    policy_max_new_tokens: int = _f(48, "answer length limit when sampling the comparisons")
    policy_temperature: float = _f(1.0, "sampling temperature of the comparisons")
    on_policy_eval_prompts: int = _f(48, "held-out prompts (eval slice) whose K sampled answers measure the "
                                         "reward model's on-policy AUC against the labeller (0: off)")
    export_for_labelling: str = _f("", "write the sampled comparisons (prompt, answer_a, answer_b) to this JSONL "
                                       "for people to fill in 'preference', then stop (read back with "
                                       "--labeller human:FILE)")


@dataclass
class DPOConfig:
    beta: float = _f(0.1, "DPO temperature: strength of the implicit KL to the reference")
    label_smoothing: float = _f(0.0, "conservative DPO: assumed share of flipped preference labels")
    dpo_loss: str = _f(
        "sigmoid",
        "offline preference loss: sigmoid (DPO), ipo, kto (pairs as desirable / undesirable), "
        "simpo or orpo (these two need no reference model; for orpo beta is its lambda)",
        registry="preference_losses",
    )
    simpo_gamma: float = _f(0.5, "SimPO's target margin gamma")
    kto_desirable_weight: float = _f(1.0, "KTO: weight of the desirable (chosen) answers' loss")
    kto_undesirable_weight: float = _f(1.0, "KTO: weight of the undesirable (rejected) answers' loss")
    ref_model_name_or_path: str = _f("", "reference model (default: the starting model)")


@dataclass
class CriticConfig:
    """PPO's critic: its model, engine, optimizer and value loss."""
    critic_model_name_or_path: str = _f("", "critic initialisation (default: the reward model)")
    critic_zero_stage: int = _f(0, "ZeRO stage of the critic", choices=(0, 1, 2, 3))
    critic_learning_rate: float = _f(5e-6, "critic learning rate")
    critic_weight_decay: float = _f(0.0, "critic AdamW weight decay (not applied to biases and norms)")
    critic_dropout: float = _f(-1.0, "override the critic's dropout probabilities (negative: keep; "
                                     "--disable_critic_dropout wins)")
    critic_lora_dim: int = _f(0, "LoRA rank of the critic (0: full fine-tuning)")
    critic_lora_module_name: str = _f("", "only the critic's linear layers whose name contains this are adapted "
                                          "(empty: all linear layers of the transformer blocks)")
    critic_lora_learning_rate: float = _f(5e-4, "learning rate of the critic's LoRA weights")
    critic_gradient_checkpointing: bool = _f(False, "gradient checkpointing for the critic")
    disable_critic_dropout: bool = _f(True, "turn the critic's dropout off in stage 3 (false keeps --dropout / "
                                            "the model's own)")
    cliprange_value: float = _f(0.2, "value clip range")
    critic_warmup_steps: int = _f(0, "first N iterations update the critic only")


@dataclass
class RolloutConfig:
    """Rollouts: how many prompts and answers, how they are sampled, shaped and filtered."""
    per_device_generation_batch_size: int = _f(4, "prompts per rollout batch per device")
    generation_batches: int = _f(1, "rollout batches collected before each round of PPO updates",
                                 aliases=("--generation_batch_numbers",))
    num_samples_per_prompt: int = _f(1, "answers sampled per prompt (the group; grpo/rloo need >= 2)",
                                     aliases=("--n_samples_per_prompt",))
    temperature: float = _f(1.0, "sampling temperature for rollouts")
    top_p: float = _f(1.0, "nucleus sampling for rollouts")
    top_k: int = _f(0, "top-k sampling for rollouts (0: off)")
    static_cache: bool = _f(False, "rollouts with a static KV cache (compiled decode on CUDA)")
    rollout_engine: str = _f("hybrid", "what generates the rollouts: the Hybrid Engine (the actor's own DeepSpeed "
                                       "engine), or vLLM colocated in each rank, synced with the actor after its "
                                       "updates (needs the vllm package)", registry="rollout_engines")
    vllm_kv_cache_gb: float = _f(1.0, "vllm on CPU: the KV cache's size in GiB")
    vllm_gpu_memory_utilization: float = _f(0.3, "vllm on GPU: the share of GPU memory vLLM may take (weights and "
                                                 "KV cache); the rest is the training's")
    vllm_sleep: bool = _f(False, "vllm on GPU: put the engine to sleep (KV cache freed) while the actor trains, "
                                 "and wake it for the next rollout")
    vllm_enforce_eager: bool = _f(True, "vllm: eager mode (no torch.compile / CUDA graphs); faster start-up")
    vllm_max_model_len: int = _f(0, "vllm: longest prompt + answer it serves (0: twice max_prompt_seq_len + "
                                    "max_answer_seq_len, room for multi-turn rollouts)")
    overlong_buffer_len: int = _f(
        0,
        "DAPO's overlong reward shaping: answers longer than max_answer_seq_len minus this "
        "many tokens lose up to --overlong_penalty_factor, linearly (0: off)",
    )
    overlong_penalty_factor: float = _f(1.0, "the overlong shaping's largest penalty (at max_answer_seq_len)")
    dynamic_filtering: bool = _f(False, "critic-free: drop groups whose samples all got the same reward")
    dynamic_sampling_max_batches: int = _f(4, "dapo: at most this many prompt batches per rollout batch are drawn to "
                                              "fill it with groups whose answers disagree")
    print_answers: bool = _f(False, "log one prompt and its sampled answer, with its reward, every "
                                    "--print_answers_interval iterations")
    print_answers_interval: int = _f(1, "iterations between two --print_answers logs")


@dataclass
class KLConfig:
    """The KL to the reference model: its coefficient, estimator, controller and place."""
    kl_coef: float = _f(0.1, "per-token KL penalty coefficient (beta)", aliases=("--kl_ctl",))
    kl_estimator: str = _f("k1", "KL estimator in the reward", choices=("k1", "k2", "k3"))
    adaptive_kl: bool = _f(False, "adapt kl_coef towards kl_target (Ziegler et al.), for every algorithm: the "
                                  "coefficient of the KL in the reward or of the k3 KL loss term")
    kl_target: float = _f(6.0, "target sequence KL for the adaptive controller")
    kl_horizon: int = _f(10000, "horizon of the adaptive KL controller")
    kl_in_reward: bool = _f(False, "critic-free: subtract kl_coef x the answer's KL from its reward instead "
                                   "of adding a k3 KL loss term")


@dataclass
class PolicyLossConfig:
    """The policy update: its loss, clipping, reduction, batches and advantages."""

    policy_loss: str = _f(
        "",
        "the policy loss instead of the algorithm's own: clip (PPO's clipped surrogate), dual_clip, "
        "gspo (one ratio per answer); empty: the algorithm's",
        registry="policy_losses",
    )
    cliprange: float = _f(0.2, "PPO policy clip range")
    eps_clip_high: float = _f(0.0, "upper policy clip (0: same as cliprange)")
    dual_clip_c: float = _f(3.0, "dual_clip: the bound c on the objective of negative advantages (c x A)")
    loss_agg: str = _f("token", "policy loss reduction: token (mean over the batch's tokens), sequence "
                                "(per-answer mean, then mean), constant (per-answer sum / max_answer_seq_len)",
                       choices=("token", "sequence", "constant"))
    per_device_training_batch_size: int = _f(4, "sequences per PPO micro-batch per device",
                                             aliases=("--per_device_mini_train_batch_size",))
    ppo_epochs: int = _f(1, "passes of PPO updates over each round of rollouts")
    gamma: float = _f(1.0, "GAE discount")
    lam: float = _f(0.95, "GAE lambda")
    whiten_advantages: bool = _f(True, "whiten advantages over the batch's valid tokens")
    std_normalize: bool = _f(True, "grpo: divide advantages by the group's standard deviation")
    group_baseline: bool = _f(False, "ppo: subtract the mean score of the num_samples_per_prompt answers "
                                     "to the same prompt before the KL penalty (the critic learns the rest)")
    rollout_is: str = _f("", "tis: weigh each token's policy loss by min(p_train / p_rollout, --rollout_is_cap), the "
                             "truncated importance weight of the policy the loss assumes over the engine that sampled "
                             "(every algorithm); empty: off", choices=("", "tis"))
    rollout_is_cap: float = _f(2.0, "the truncation C of --rollout_is tis")


@dataclass
class PtxConfig:
    """InstructGPT's PPO-ptx: a language-model loss mixed into the actor's updates."""
    unsup_coef: float = _f(
        0.0,
        "weight of the unsupervised language-model loss mixed into the actor updates "
        "(InstructGPT's PPO-ptx gamma; its data: --unsupervised_dataset_name, else the SFT slice)",
    )
    unsupervised_dataset_name: str = _f("", "the unsupervised loss's text data: a hub dataset id or local dataset "
                                            "directory/file read with datasets.load_dataset (its 'text' column, else "
                                            "its first), cut into blocks of max_prompt_seq_len + max_answer_seq_len "
                                            "tokens; empty: the SFT slice")
    unsupervised_dataset_config_name: str = _f("", "configuration name of --unsupervised_dataset_name (e.g. "
                                                   "wikitext-2-raw-v1)")
    preprocessing_num_workers: int = _f(0, "processes that tokenise --unsupervised_dataset_name (0: this one)")


@dataclass
class CurriculumConfig:
    """The prompt curriculum: which prompts' groups the rollouts draw from."""
    prompt_curriculum: bool = _f(False, "draw each rollout batch's prompts by group (the --balance_key field, "
                                         "e.g. the task), in proportion to how much the answers to one prompt "
                                         "of that group still disagree (needs num_samples_per_prompt >= 2)")
    curriculum_decay: float = _f(0.8, "at every rollout batch the curriculum's earlier observations of a group's "
                                      "spread count this much (1: never forgotten)")
    curriculum_prior: float = _f(2.0, "pseudo-prompts at the all-group mean spread that each group's estimate "
                                      "starts from (one unlucky batch does not starve a group)")
    curriculum_floor: float = _f(0.1, "added to every group's weight, as a fraction of the mean spread of all "
                                      "groups, so a group whose answers all agree is still revisited")


@dataclass
class EMAConfig:
    """The exponential moving average of the actor."""
    enable_ema: bool = _f(False, "keep an exponential moving average of the actor (saved as actor_ema)")
    ema_decay: float = _f(0.992, "EMA decay")


@dataclass
class RLConfig:
    """Stage 3: the algorithm, and its settings by concern (flags keep their flat, DeepSpeed-Chat names)."""

    offload_reference_model: bool = _f(
        False, "keep the frozen reference model's parameters in CPU memory (ZeRO-3 offload)"
    )
    offload_reward_model: bool = _f(False, "keep the frozen reward model's parameters in CPU memory (ZeRO-3 offload), "
                                           "like --offload_reference_model")
    offload_idle_models: bool = _f(False, "keep only the models a phase uses in device memory: the reference, the "
                                          "reward model(s) and the critic (with its optimizer state) move to CPU "
                                          "memory while idle (generation keeps the actor alone); pays on a GPU")
    disable_actor_dropout: bool = _f(True, "turn the actor's dropout off in stage 3 (old log-probs are taken in eval "
                                           "mode, so dropout would make the first PPO ratio differ from 1); "
                                           "false keeps --dropout / the model's own")
    enable_test_mode: bool = _f(False, "stop after --test_stop_step iterations (DeepSpeed-Chat's test mode)")
    test_stop_step: int = _f(0, "with --enable_test_mode: the iteration after which stage 3 stops")
    algo: str = _f("ppo", "stage 3 algorithm: ppo (with a critic) or a critic-free one", registry="algorithms",
                   aliases=("--rl_algo",))
    critic: CriticConfig = field(default_factory=CriticConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    ptx: PtxConfig = field(default_factory=PtxConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class RewardSourcesConfig:
    """Stage 3: where rewards come from and how a score is shaped before the advantage estimator."""
    reward: list[str] = _f(["model"], "reward sources, weighted by reward_weights and summed (model: the reward "
                                      "model; checker: the bundled checker)", sources="reward")
    reward_weights: list[float] = _f([], "one weight per reward source (default: 1 each)")
    reward_timeout: float = _f(30.0, "seconds to wait for an HTTP reward endpoint")
    reward_model_name_or_path: str = _f("", "trained reward model directory (Stage 2 output)")
    reward_zero_stage: int = _f(0, "ZeRO stage of the frozen reward model (3 partitions it)", choices=(0, 1, 2, 3))
    missing_eos_penalty: float = _f(0.0, "subtracted from the score of answers that never emit EOS")
    reward_clip: float = _f(5.0, "clip the sequence score to +-this (0: off)", aliases=("--clip_reward_value",))
    normalize_reward: bool = _f(False, "normalise scores with running mean/std")
    judge: str = _f("", "a labeller whose verdicts on each iteration's rollouts are logged beside the reward, with "
                        "their agreement (never a reward); empty: the bundled checker on the prompts that are its "
                        "tasks", sources="judge")
    eval_reward: list[str] = _f([], "reward sources that score the greedy answers of stage 3's evaluation: their "
                                    "sum's mean is eval_reward, the share at --eval_pass_threshold or more the "
                                    "pass_rate; empty: the sources of --reward that are not a reward model, else the "
                                    "bundled checker on the prompts that are its tasks", sources="metric")
    eval_pass_threshold: float = _f(1.0, "an evaluation answer passes when --eval_reward scores it this much or more")
    reward_refresh_interval: int = _f(0, "iterated RLHF (Llama 2): every N iterations, label the rollouts since the "
                                         "last refresh with --labeller and train the reward model on them (0: the "
                                         "reward model stays frozen)")
    reward_refresh_labels: int = _f(64, "labels spent per refresh, newest rollouts first (one per answer for a rule "
                                        "or HTTP labeller, one per two answers compared for a judge)")
    reward_refresh_steps: int = _f(8, "reward-model optimizer steps per refresh")
    reward_refresh_batch: int = _f(8, "pairs per refresh step: half labelled in stage 3, half replayed from stage "
                                      "2's policy_pairs.jsonl beside the reward model (all new when it has none)")
    reward_refresh_learning_rate: float = _f(2e-5, "reward-model learning rate of the refreshes (constant)")
    reward_refresh_center: float = _f(0.0, "refreshes add this x mean((r_chosen + r_rejected)^2) to the pairwise "
                                           "loss, keeping the scores centred near 0 (TRL's center_rewards_coefficient)")


@dataclass
class ToolsConfig:
    """Stage 3: multi-turn rollouts, in which the model calls tools (or talks to an environment) between turns."""

    tools: list[str] = _f(
        [],
        "tools the model may call: bundled names (calculator) or module:function, comma-separated "
        "or repeated; each function's JSON schema comes from its type hints and docstring",
    )
    tool_parser: str = _f("hermes", "how tool calls are read from the model's text: a registered parser (hermes: "
                                    "<tool_call>{json}</tool_call>) or module:function (text -> tools.parsers.Parsed)")
    environment: str = _f("", "module:Class: an environment with reset(row) and step(messages), built once per "
                              "rollout, instead of the tool loop")
    max_turns: int = _f(4, "model turns per multi-turn rollout at most")
    turn_stop: list[str] = _f(
        [],
        "texts that end a model turn besides EOS, e.g. </tool_call> (the text is kept, and the "
        "template's end-of-turn token is added after it, outside the action mask)",
    )
    max_rollout_tokens: int = _f(0, "tokens after the prompt (the model's and the observations') per multi-turn "
                                    "rollout at most (0: max_turns x max_answer_seq_len and the observations)")
    tool_timeout: float = _f(10.0, "seconds a tool call may take; a slower call is answered with a timeout error")
    max_tool_output_tokens: int = _f(256, "a tool's output is cut to this many tokens")
    tool_workers: int = _f(0, "run tool calls in this many worker processes (a call over --tool_timeout is killed); "
                              "0: in the training process")


@dataclass
class DSChatConfig:
    """DeepSpeed-Chat flags that change nothing here, accepted so that its scripts run unchanged; each one
    given is named once in the stage's log with the reason (``inert_flags``)."""
    deepspeed: bool = _f(False, "no effect here: DeepSpeed is always on (deepspeed.add_config_arguments' flag)")
    deepscale: bool = _f(False, "no effect here: DeepSpeed is always on (the deprecated form of --deepspeed)")
    compute_fp32_loss: bool = _f(False, "no effect here: losses are always computed from fp32 log-probabilities")
    no_bf16_to_fp32_loss: bool = _f(False, "no effect here: the reward-model loss is always computed in fp32")
    add_eot_token: bool = _f(False, "no effect here: answers end with the tokenizer's EOS token id (never the text "
                                    "<|endoftext|>), so no token is added to the tokenizer")
    eot_token: str = _f("", "no effect here: answers end with the tokenizer's EOS token id (see --add_eot_token)")
    num_padding_at_beginning: int = _f(-1, "no effect here: the token each score is read at is found from the "
                                           "attention mask, for every model family")
    enable_hybrid_engine: bool = _f(False, "no effect here: the Hybrid Engine always drives the actor")
    unpin_actor_parameters: bool = _f(False, "no effect here: generation never pins the actor's parameters")
    release_inference_cache: bool = _f(False, "no effect here: every generation's KV cache is freed when it ends")
    inference_tp_size: int = _f(1, "tensor-parallel degree of the Hybrid Engine's generation: only 1 (every rank "
                                   "generates its own rollouts with the whole actor, gathered under ZeRO-3)")
    tp_gather_partition_size: int = _f(
        8, "no effect here: there is no tensor-parallel generation (--inference_tp_size)"
    )
    enable_mixed_precision_lora: bool = _f(False, "no effect here: ZeRO++ mixed-precision LoRA is not used; LoRA "
                                                  "weights train in the training dtype")
    align_overflow: bool = _f(False, "no effect here: each engine skips its own fp16-overflow steps")


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


def parse_split(text: str) -> list[float]:
    """'2,4,4' -> [0.2, 0.4, 0.4]."""
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"data_split must be three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ConfigError(f"data_split must be three non-negative numbers with a positive sum, got {text!r}")
    total = sum(parts)
    return [p / total for p in parts]


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
