"""Stage 3's sections: the critic, rollouts, KL, the policy loss, PPO-ptx, the curriculum, EMA, the reward
sources and tools."""
from __future__ import annotations

from dataclasses import dataclass, field

from .fields import _f


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
