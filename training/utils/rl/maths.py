"""Pure maths shared by the stages: token log-probs and language-model losses.

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
