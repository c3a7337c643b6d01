"""Collators: SFT (right-padded, loss mask), pairs (chosen+rejected), prompts (left-padded)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

IGNORE = -100


def pad_sequences(
    seqs: list[list[int]], pad_id: int, left: bool, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of ``seqs`` padded to one width, on the left or on the right."""
    n = max(len(s) for s in seqs)
    n = -(-n // multiple) * multiple
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            ids[i, n - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, n - len(s):] = 1
        else:
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
    return ids, mask


@dataclass
class SFTCollator:
    """input_ids / attention_mask / labels; labels are -100 on padding and, unless
    ``loss_on == 'all'``, on the prompt, so the loss covers the answer and its EOS."""
    pad_token_id: int
    loss_on: str = "answer"
    pad_to_multiple_of: int = 1

    def __call__(self, rows: list[dict]) -> dict:
        ids, mask = pad_sequences(
            [list(r["input_ids"]) for r in rows], self.pad_token_id, False, self.pad_to_multiple_of
        )
        labels = ids.clone()
        labels[mask == 0] = IGNORE
        if self.loss_on == "answer":
            for i, r in enumerate(rows):
                labels[i, :int(r["prompt_len"])] = IGNORE
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PairCollator:
    """One batch of 2B sequences, chosen rows first then rejected rows (DeepSpeed-Chat's layout),
    right-padded; ``end_index`` is the position of each sequence's last real token (its EOS)."""
    pad_token_id: int
    pad_to_multiple_of: int = 1

    def __call__(self, rows: list[dict]) -> dict:
        seqs = [list(r["chosen_ids"]) for r in rows] + [list(r["rejected_ids"]) for r in rows]
        ids, mask = pad_sequences(seqs, self.pad_token_id, False, self.pad_to_multiple_of)
        end = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
        prompt_len = torch.tensor([int(r["prompt_len"]) for r in rows] * 2, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "end_index": end, "prompt_len": prompt_len}


@dataclass
class PromptCollator:
    """Left-padded prompts for generation."""
    pad_token_id: int
    pad_to_multiple_of: int = 1

    def __call__(self, rows: list[dict]) -> dict:
        ids, mask = pad_sequences(
            [list(r["prompt_ids"]) for r in rows], self.pad_token_id, True, self.pad_to_multiple_of
        )
        out = {"input_ids": ids, "attention_mask": mask}
        for key in ("prompt_text", "group"):          # the checker's task, the curriculum's group
            if key in rows[0]:
                out[key] = [r[key] for r in rows]
        if "columns" in rows[0]:                       # each row's other dataset columns, for the rewards
            out["columns"] = [json.loads(r["columns"]) for r in rows]
        if "messages" in rows[0]:                      # the prompt's messages, for multi-turn rollouts
            out["messages"] = [json.loads(r["messages"]) for r in rows]
        return out
