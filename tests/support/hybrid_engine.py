"""Helpers shared by the hybrid_engine tests of several kinds."""


import torch

from training.utils.config import LoraConfig
from training.utils.generation import GenerationSettings
from training.utils.model import apply_lora

GREEDY = GenerationSettings(max_new_tokens=12, do_sample=False)


def _prompts(tok):
    texts = ["Compute 2 + 2.", "Write one sentence about cats. Use only capital letters.", "Hi"]
    ids = [tok(t)["input_ids"] for t in texts]
    w = max(map(len, ids))
    x = torch.full((len(ids), w), tok.pad_token_id)
    m = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, w - len(s):] = torch.tensor(s)
        m[i, w - len(s):] = 1
    return x, m


def lora_that_changes_answers(model):
    """``model`` with LoRA adapters whose B factors are non-zero (a merge changes the weights)."""
    model = apply_lora(model, LoraConfig(lora_dim=4, lora_alpha=8))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return model
