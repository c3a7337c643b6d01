"""The evaluation's greedy fast path (shared prefix once, finished rows dropped, length-sorted
batches) writes the tokens transformers' greedy ``generate`` writes for each prompt on its own."""

import pytest
import torch

from inference.greedy import common_prefix, greedy_token_ids
from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
from training.utils.generation import GenerationSettings, hf_generate


def test_common_prefix_leaves_every_prompt_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix([[1, 2], [1, 2, 3]]) == 1 and common_prefix([[7, 1], [8, 1]]) == 0
    assert common_prefix([]) == 0 and common_prefix([[4, 5, 6]]) == 2


@pytest.mark.parametrize("name", ["tiny", "tiny-opt"])
def test_same_tokens_as_generate_one_prompt_at_a_time(name):
    from inference.passrate import eval_prompts
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer(name, padding_side="left")
    model = load_causal_lm(name, tok).eval()
    with torch.no_grad():  # larger random weights: a random model whose greedy answers vary (not one token repeated)
        gen = torch.Generator().manual_seed(0)
        for w in model.parameters():
            w.copy_(torch.randn(w.shape, generator=gen) * 0.5)
    prompts = [
        prompt_token_ids(tok, render_prompt(tok, to_messages(p), "auto"), "auto") for p in eval_prompts("dev", 23)
    ]
    assert common_prefix(prompts) >= 5 and len({len(p) for p in prompts}) > 3     # a shared system turn; ragged rest

    first = []
    for p in prompts:
        ids = torch.tensor([p])
        first.append(model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                    min_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, temperature=None,
                                    top_p=None, top_k=None)[0, len(p):].tolist())
    # a random model rarely writes its EOS: call "EOS" a token it writes in some answers, never first, so that
    # rows end at different steps; greedy answers are then the 12-token ones cut after that token's first place
    starts = {a[0] for a in first}
    cut = lambda eos: [a[:a.index(eos) + 1] if eos in a else a for a in first]
    eos = max((t for a in first for t in set(a[1:]) - starts), key=lambda t: (len({len(a) for a in cut(t)}), -t))
    want = cut(eos)
    lengths = {len(a) for a in want}
    assert min(lengths) < 12 and max(lengths) == 12 and len(lengths) >= 2      # rows stop early, others go on
    for batch in (4, 64):
        assert greedy_token_ids(model, prompts, eos, 12, batch_size=batch) == want
    # and against the project's own batched generate (left-padded, the Hybrid Engine's path)
    ids = torch.tensor([[tok.pad_token_id] * (max(map(len, prompts)) - len(p)) + p for p in prompts])
    mask = (torch.arange(ids.shape[1])[None] >= torch.tensor([ids.shape[1] - len(p) for p in prompts])[:, None]).long()
    seq = hf_generate(model, tok, ids, mask, GenerationSettings(max_new_tokens=12, do_sample=False))[:, ids.shape[1]:]
    got = greedy_token_ids(model, prompts, tok.eos_token_id, 12, batch_size=8)
    assert got == [[t for t in row.tolist()][:len(g)] for row, g in zip(seq, got)]
