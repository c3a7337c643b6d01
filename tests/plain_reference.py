"""The plain, unoptimised computations the fast paths are tested against (test code only)."""
from __future__ import annotations

import torch

from training.utils.losses import token_logprobs


def answer_mask(input_ids: torch.Tensor, prompt_len: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
    """1 on answer tokens (prompt_len <= t <= end_index), 0 on prompt and padding.  [B, T]."""
    pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    return ((pos >= prompt_len.unsqueeze(1)) & (pos <= end_index.unsqueeze(1))).to(torch.float32)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked tokens t of log p(input_ids[t] | input_ids[:t]).  [B]."""
    lp = token_logprobs(logits[:, :-1, :], input_ids[:, 1:])
    return (lp * mask[:, 1:]).sum(-1)
