

import torch
from support.hybrid_engine import GREEDY, _prompts

from training.utils.generation import GenerationSettings, PlainHFBackend
from training.utils.model import load_causal_lm


def test_static_cache_path_gives_the_same_tokens(tiny_tok):
    model = load_causal_lm("tiny", tiny_tok, seed=9)
    x, m = _prompts(tiny_tok)
    plain = PlainHFBackend(model, tiny_tok)
    dynamic = plain.generate(x, m, GREEDY)
    static = plain.generate(x, m, GenerationSettings(max_new_tokens=12, do_sample=False, static_cache=True))
    assert torch.equal(dynamic, static)
