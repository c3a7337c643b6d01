
import pytest
import torch
from support.reward import _batch

from training.utils.model import ValueModel, end_scores, load_reward_model


def test_score_is_taken_at_the_eos_not_at_padding(tiny_tok):
    torch.manual_seed(0)
    vm = ValueModel(load_reward_model("tiny", tiny_tok)).eval()
    b = _batch(tiny_tok)
    with torch.no_grad():
        values = vm(b["input_ids"], b["attention_mask"])
        scores = end_scores(values, b["end_index"])
        # the same sequence alone, unpadded, gives the same score
        for i in range(4):
            n = int(b["end_index"][i]) + 1
            alone = vm(b["input_ids"][i:i + 1, :n], b["attention_mask"][i:i + 1, :n])[0, -1]
            assert alone.item() == pytest.approx(scores[i].item(), abs=1e-5)


def test_scorer_runs_a_prompt_once_and_matches_each_pair_alone(tmp_path, tiny_tok, monkeypatch):
    """The closing report scores every model's answer to a prompt in one call: pairs run ordered by
    prompt, the prompt once per batch, and each score equals the pair's own whole-row forward."""
    from inference.rw_eval import Scorer
    from training.utils import shared_prefix
    from training.utils.model import save_hf

    save_hf(load_reward_model("tiny", tiny_tok, seed=3), tiny_tok, tmp_path / "rm", zero_stage=0)
    scorer = Scorer(str(tmp_path / "rm"))
    a, b = "Compute 2 + 2. Reply with the number only.", "Say hi in one short sentence."
    pairs = [(a, "4"), (b, "Hello there, how are you today?"), (a, "five, I think"), (b, "hi"), (a, "4"),
             ("Name a colour.", "blue")]
    prefixes = []
    real = shared_prefix.prefix_cache
    monkeypatch.setattr(shared_prefix, "prefix_cache",
                        lambda model, seq, attn, pos, start, groups, **kw: prefixes.append(len(groups[0]))
                        or real(model, seq, attn, pos, start, groups, **kw))
    got = scorer.score(pairs, batch_size=8)
    assert prefixes == [3]                   # one batch, three distinct prompts computed once each
    alone = []
    with torch.no_grad():
        for p, ans in pairs:
            ids = torch.tensor([sum(scorer.encode(p, ans), [])])
            alone.append(scorer.model(ids, torch.ones_like(ids))[0, -1].item())
    assert got == pytest.approx(alone, abs=1e-5)
    assert got[0] == pytest.approx(got[4], abs=1e-6) and abs(got[0] - got[2]) > 1e-4
    assert scorer.score(pairs, batch_size=2) == pytest.approx(alone, abs=1e-5)   # prompts split over batches
