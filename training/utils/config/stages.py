"""The sections of stage 1 (SFT) and stage 2 (the reward model, and the offline preference losses)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import _f


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
