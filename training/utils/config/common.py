"""The sections every stage reads: data, model, LoRA, optimizer, DeepSpeed, logging, checkpoints, and
DeepSpeed-Chat's flags that change nothing here."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import _f


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
