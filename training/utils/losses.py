"""The losses of stages 1 and 2: token log-probs, the language-model loss, the reward-model losses and DPO.

No DeepSpeed import here: everything is plain torch on tensors, unit-tested against
hand-computed values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[t] | ...) for each position, computed in float32.  Shapes [B, T, V], [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position, [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


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

def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """InstructGPT reward-model loss: mean of -log sigmoid(r_chosen - r_rejected) over pairs."""
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()


def pointwise_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A correctness head's loss: mean binary cross-entropy of sigmoid(score) against each answer's label in
    [0, 1] (Cobbe et al. 2021's verifier; every labelled answer counts, paired or not)."""
    return F.binary_cross_entropy_with_logits(scores.float(), labels.float())


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


@dataclass(frozen=True)
class PairLogps:
    """Sequence log-probs of a batch of pairs (answer tokens, EOS included), each [B]: the policy's
    sums, the reference's sums (None for the reference-free losses) and the answers' token counts."""
    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: Optional[torch.Tensor]
    ref_rejected: Optional[torch.Tensor]
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor


@dataclass(frozen=True)
class PreferenceLoss:
    name: str
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    needs_reference: bool


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}


def register_preference_loss(name: str, needs_reference: bool = True) -> Callable:
    """``fn(pair: PairLogps, cfg: DPOConfig) -> (mean loss, chosen rewards [B], rejected rewards [B])``
    (the rewards detached, for the accuracy and margin logged)."""
    def add(fn):
        if name in PREFERENCE_LOSSES:
            raise ValueError(f"preference loss {name!r} registered twice")
        PREFERENCE_LOSSES[name] = PreferenceLoss(name, fn, needs_reference)
        return fn
    return add


@register_preference_loss("sigmoid")
def _dpo(pair: PairLogps, d):
    return dpo_loss(
        pair.chosen, pair.rejected, pair.ref_chosen, pair.ref_rejected, d.beta, d.label_smoothing, "sigmoid"
    )


@register_preference_loss("ipo")
def _ipo(pair: PairLogps, d):
    return dpo_loss(pair.chosen, pair.rejected, pair.ref_chosen, pair.ref_rejected, d.beta, 0.0, "ipo")


@register_preference_loss("kto")
def kto_loss(pair: PairLogps, d):
    """KTO (Ethayarajh et al., 2024) on pairs: the chosen answer desirable, the rejected undesirable.
    With r = beta (log pi - log pi_ref) and the reference point z = beta max(0, mean of the batch's
    log pi - log pi_ref), detached (the paper estimates the KL term the same way, from the batch):
    w_D (1 - sigmoid(r_c - z)) + w_U (1 - sigmoid(z - r_r)), averaged over pairs."""
    rc, rr = pair.chosen - pair.ref_chosen, pair.rejected - pair.ref_rejected
    z = torch.cat([rc, rr]).mean().detach().clamp(min=0)
    losses = (d.kto_desirable_weight * (1 - torch.sigmoid(d.beta * (rc - z))) +
              d.kto_undesirable_weight * (1 - torch.sigmoid(d.beta * (z - rr))))
    return losses.mean(), d.beta * rc.detach(), d.beta * rr.detach()


@register_preference_loss("simpo", needs_reference=False)
def simpo_loss(pair: PairLogps, d):
    """SimPO (Meng et al., 2024): no reference model; the length-normalised log-probs with a margin,
    -log sigmoid(beta (mean log pi_c - mean log pi_r) - gamma)."""
    c, r = pair.chosen / pair.chosen_len.clamp(min=1), pair.rejected / pair.rejected_len.clamp(min=1)
    losses = -F.logsigmoid(d.beta * (c - r) - d.simpo_gamma)
    return losses.mean(), d.beta * c.detach(), d.beta * r.detach()


@register_preference_loss("orpo", needs_reference=False)
def orpo_loss(pair: PairLogps, d):
    """ORPO (Hong et al., 2024): no reference model; the chosen answer's NLL (per token) plus
    beta x -log sigmoid(log odds_c - log odds_r), odds = p / (1 - p) of the mean token log-prob."""
    c, r = pair.chosen / pair.chosen_len.clamp(min=1), pair.rejected / pair.rejected_len.clamp(min=1)
    log_odds = lambda x: x - torch.log1p(-torch.exp(x).clamp(max=1 - 1e-6))
    ratio = log_odds(c) - log_odds(r)
    losses = -c - d.beta * F.logsigmoid(ratio)
    return losses.mean(), d.beta * log_odds(c).detach(), d.beta * log_odds(r).detach()
