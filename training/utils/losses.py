"""The losses of stages 1 and 2: token log-probs, the language-model loss, the reward-model losses and DPO.

No DeepSpeed import here: everything is plain torch on tensors, unit-tested against
hand-computed values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[t] | ...) for each position, computed in float32.  Shapes [B, T, V], [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def causal_lm_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token negative log-likelihoods, number of scored tokens).

    ``labels`` are aligned with ``logits`` positions as in Hugging Face (label t is predicted by
    logits t-1); positions with label -100 are not scored.
    """
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    nll = -token_logprobs(shift_logits, shift_labels)
    return (nll * mask).sum(), mask.sum()


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over the scored tokens of the batch."""
    total, count = causal_lm_nll(logits, labels)
    return total / count.clamp(min=1)


# --------------------------------------------------------------------------- preference losses

def answer_mask(input_ids: torch.Tensor, prompt_len: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
    """1 on answer tokens (prompt_len <= t <= end_index), 0 on prompt and padding.  [B, T]."""
    pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    return ((pos >= prompt_len.unsqueeze(1)) & (pos <= end_index.unsqueeze(1))).to(torch.float32)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked tokens t of log p(input_ids[t] | input_ids[:t]).  [B]."""
    lp = token_logprobs(logits[:, :-1, :], input_ids[:, 1:])
    return (lp * mask[:, 1:]).sum(-1)


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """InstructGPT reward-model loss: mean of -log sigmoid(r_chosen - r_rejected) over pairs."""
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()


def per_token_pair_loss(chosen_values: torch.Tensor, rejected_values: torch.Tensor,
                        chosen_ids: torch.Tensor, rejected_ids: torch.Tensor,
                        chosen_len: torch.Tensor, rejected_len: torch.Tensor) -> torch.Tensor:
    """DeepSpeed-Chat's variant: for each pair, -log sigmoid(v_c[t] - v_r[t]) averaged over the
    positions from the first token where the two sequences differ to the end of the longer one;
    then averaged over pairs.  Values [B, T]; lengths are the real-token counts."""
    losses = []
    for i in range(chosen_values.shape[0]):
        end = int(max(chosen_len[i], rejected_len[i]))
        diff = (chosen_ids[i, :end] != rejected_ids[i, :end]).nonzero()
        start = int(diff[0]) if len(diff) else end - 1
        c, r = chosen_values[i, start:end].float(), rejected_values[i, start:end].float()
        losses.append(-F.logsigmoid(c - r).mean())
    return torch.stack(losses).mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0,
             kind: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (sigmoid, optionally label-smoothed) or IPO on sequence log-probs.

    Returns (mean loss, implicit chosen rewards beta*(pi_c - ref_c), implicit rejected rewards).
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if kind == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        if label_smoothing:
            raise ValueError("IPO has no label smoothing (its squared loss already regularises); "
                             "use label_smoothing 0 with dpo_loss ipo")
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {kind!r}")
    return losses.mean(), beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()
