import copy

import pytest
import torch
from support.hybrid_engine import GREEDY, _prompts, lora_that_changes_answers

from training.utils.arguments import parse_config
from training.utils.deepspeed_setup import build_train_engine
from training.utils.distributed import init_distributed
from training.utils.generation import PlainHFBackend
from training.utils.hybrid_engine import HybridEngine
from training.utils.model import load_causal_lm
from training.utils.model.save import gathered_state_dict


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
@pytest.mark.parametrize("zero", [0, 2, 3])
@pytest.mark.parametrize("lora", [False, True])
def test_hybrid_engine_greedy_equals_hf_generate(kind, zero, lora, tiny_tok):
    init_distributed()
    model = load_causal_lm(kind, tiny_tok, seed=7)
    if lora:
        model = lora_that_changes_answers(model)
    x, m = _prompts(tiny_tok)
    fresh = copy.deepcopy(model)
    want = PlainHFBackend(copy.deepcopy(model), tiny_tok).generate(x, m, GREEDY)
    cfg = parse_config(["--zero_stage", str(zero), "--per_device_train_batch_size", "2", "--learning_rate", "3e-2",
                        "--lr_scheduler_type", "constant"])
    engine = build_train_engine(model, cfg, total_steps=1)
    he = HybridEngine(engine, tiny_tok, zero)
    got = he.generate(x, m, GREEDY)
    assert torch.equal(got, want)
    # training still works after the rollout (ZeRO-3 hooks restored), and the next rollout is plain
    # generate on the *updated* weights (a large step: the greedy tokens change)
    he.train()
    out = engine(input_ids=got, attention_mask=torch.ones_like(got))
    engine.backward(-out.logits.float()[..., 5].mean())       # push every position towards token 5
    engine.step()
    again = he.generate(x, m, GREEDY)
    assert engine.module.training
    updated = gathered_state_dict(engine.module, zero)
    missing, unexpected = fresh.load_state_dict(updated, strict=False)
    assert not unexpected and not [k for k in missing if k in dict(fresh.named_parameters())]
    assert torch.equal(again, PlainHFBackend(fresh, tiny_tok).generate(x, m, GREEDY))
    assert not torch.equal(again, got)
