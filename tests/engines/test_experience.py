"""The one rollout-and-score path: answer masks, the experience maker's wiring of rewards, KL and
advantages for a critic-free and a critic algorithm, pair filtering, and the ZeRO-3 gather the
Hybrid Engine generates under."""


import pytest
import torch

from training.utils.arguments import parse_config


@pytest.mark.slow
def test_zero3_gather_gives_every_full_weight_and_restores_the_partition(tiny_tok):
    import copy

    from training.utils.deepspeed_setup import build_train_engine
    from training.utils.distributed import init_distributed
    from training.utils.hybrid_engine import zero3_gathered_without_hooks
    from training.utils.model import load_causal_lm

    init_distributed()

    model = load_causal_lm("tiny", tiny_tok, seed=4)
    want = {n: p.detach().clone() for n, p in copy.deepcopy(model).named_parameters()}
    engine = build_train_engine(model, parse_config(["--zero_stage", "3", "--per_device_train_batch_size", "2"]), 1)
    params = dict(engine.module.named_parameters())
    assert all(p.numel() == 0 or p.shape != want[n].shape for n, p in params.items())     # partitioned
    with zero3_gathered_without_hooks(engine):
        for n, p in params.items():
            assert torch.equal(p.data, want[n]), n
    assert all(p.data.numel() == 0 for p in params.values())      # released again after the context
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():       # the hooks are back: a plain forward through the engine still works
        assert engine.module(input_ids=x).logits.shape == (1, 3, len(tiny_tok))
