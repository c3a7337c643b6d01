
import pytest
import torch


@pytest.mark.parametrize("kind,loss_on", [("tiny", "answer"), ("tiny-opt", "answer"), ("tiny", "all")])
def test_sft_loss_on_the_scored_columns_equals_the_full_logits_loss(kind, loss_on):
    from training.step1_supervised_finetuning.main import scored_logits, sft_step
    from training.utils.data import SFTCollator
    from training.utils.losses import causal_lm_loss
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer(kind)
    model = load_causal_lm(kind, tok, seed=0).train()
    torch.manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 200, (plen + alen,)).tolist(), "prompt_len": plen}
            for plen, alen in ((9, 4), (14, 2), (11, 7))]
    batch = SFTCollator(tok.pad_token_id, loss_on)(rows)
    engine = lambda **kw: model(**kw)
    out = {}
    for name in ("full", "scored"):
        model.zero_grad()
        if name == "full":
            loss = causal_lm_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                  batch["labels"])
        else:
            loss = sft_step(engine, batch)[0]
        loss.backward()
        out[name] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(out["scored"][0], out["full"][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["scored"][1], out["full"][1], rtol=0, atol=5e-5)
    assert out["full"][0] > 1.0 and out["full"][1].abs().max() > 1e-2
    logits, labels = scored_logits(engine, batch)
    # 18 columns (11 + 7); answers start at column 9 at the earliest, predicted by the state at 8: 10 columns
    assert logits.shape[1] == labels.shape[1] == (10 if loss_on == "answer" else 18)
