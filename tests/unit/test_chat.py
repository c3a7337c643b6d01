"""Chat engine and terminal chat: equality with HF generate, stop strings, streaming, history."""

import pytest
import torch

from applications.chat_engine import ContextOverflow, Request, Sampling, _Row, _Rows
from applications.cli import Chat


def hf_greedy(engine, ids, n):
    out = engine.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                do_sample=False, max_new_tokens=n, pad_token_id=engine.tok.pad_token_id,
                                eos_token_id=engine.tok.eos_token_id)
    return engine.tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def test_greedy_equals_hf_generate_alone_and_in_a_batch(chat_engine):
    prompts = ["What is 2 + 3?", "Name a colour, in one word please.", "hi"]
    ids = [chat_engine.prompt_ids([{"role": "user", "content": p}], 12)[0] for p in prompts]
    pieces = []
    single = [chat_engine.generate([Request(i, 12, on_delta=pieces.append if k == 0 else None)],
                                   Sampling(greedy=True))[0] for k, i in enumerate(ids)]
    for i, c in zip(ids, single):
        assert c.text == hf_greedy(chat_engine, i, 12)
        assert c.finish_reason == "length" and c.completion_tokens == 12
    assert "".join(pieces) == single[0].text                       # streamed pieces add up to the answer
    batch = chat_engine.generate([Request(i, 12) for i in ids], Sampling(greedy=True))
    assert [c.text for c in batch] == [c.text for c in single]
    # per-row limits inside one batch
    mixed = chat_engine.generate([Request(ids[0], 4), Request(ids[1], 12)], Sampling(greedy=True))
    assert mixed[0].completion_tokens == 4 and mixed[1].text == single[1].text
    assert single[0].text.startswith(mixed[0].text)


def _feed(tok, text, stop, max_new=100):
    """Run the stop/stream logic over ``text`` token by token, as generate would."""
    pieces = []
    row = _Row(Request([1, 2], max_new, stop, pieces.append), start=2)
    crit = _Rows(tok, [row])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for k in range(1, len(ids) + 1):
        done = crit(torch.tensor([[1, 2] + ids[:k]]), None)
        if bool(done[0]):
            break
    return row, pieces


def test_answer_cut_at_next_user_turn_and_stream_never_shows_it(tiny_tok):
    row, pieces = _feed(tiny_tok, "Paris is the capital.\n\nHuman: and Spain?", ["Human:"])
    assert row.done and row.finish == "stop" and row.text == "Paris is the capital."
    assert "".join(pieces) == "Paris is the capital."
    assert not any("Hum" in p for p in pieces)


def test_eos_and_length_finish(tiny_tok):
    eos = tiny_tok.eos_token
    row, pieces = _feed(tiny_tok, f"Yes.{eos}", ["Human:"])
    assert (row.finish, row.text, "".join(pieces)) == ("stop", "Yes.", "Yes.")
    row, _ = _feed(tiny_tok, "one two three four five six", [], max_new=3)
    assert row.finish == "length" and row.tokens == 3


def test_history_truncation_keeps_system_and_newest(chat_engine, monkeypatch):
    sys_msg = {"role": "system", "content": "Be brief."}
    turns = []
    for k in range(6):
        turns += [{"role": "user", "content": f"question {k} " + "word " * 20},
                  {"role": "assistant", "content": f"answer {k} " + "word " * 20}]
    msgs = [sys_msg] + turns + [{"role": "user", "content": "last one?"}]
    full, dropped = chat_engine.prompt_ids(msgs, 16)
    assert dropped == 0
    monkeypatch.setattr(chat_engine, "max_context", 150)
    ids, dropped = chat_engine.prompt_ids(msgs, 16)
    assert dropped > 0 and len(ids) + 16 <= 150 and len(ids) < len(full)
    text = chat_engine.tok.decode(ids)
    assert text.replace(chat_engine.tok.bos_token, "").startswith("Be brief.") and "last one?" in text
    assert "question 0" not in text and "answer 5" in text
    with pytest.raises(ContextOverflow, match="exceeds the 150-token context"):
        chat_engine.prompt_ids([sys_msg, {"role": "user", "content": "long " * 200}], 16)
    with pytest.raises(ValueError, match="last message must come from the user"):
        chat_engine.prompt_ids(turns, 16)


def test_terminal_chat_history_clear_settings_and_streaming(chat_engine):
    inputs = iter(["hello there", "/set greedy on", "/set max_new_tokens 6", "and now?", "clear",
                   "fresh start", "/set temperature hot", "quit", "never read"])
    out = []
    chat = Chat(chat_engine, 8, Sampling(greedy=False, temperature=0.7, top_p=0.9))
    chat.run(lambda prompt: next(inputs), out.append)
    text = "".join(out)
    assert "[history cleared]" in text and "temperature: 'hot' is not a number" in text
    assert chat.sampling.greedy and chat.max_new_tokens == 6
    assert [m["role"] for m in chat.history] == ["user", "assistant"]      # cleared, then one turn
    assert chat.history[0]["content"] == "fresh start"
    # the streamed answer printed after "Assistant: " is the stored answer, and greedy is reproducible
    last = text.rsplit("Assistant: ", 1)[1]
    assert last.startswith(chat.history[1]["content"])
    again = chat_engine.reply([{"role": "user", "content": "fresh start"}], 6, Sampling(greedy=True))
    assert again.text == chat.history[1]["content"]


def test_terminal_chat_drops_oldest_turns_when_context_is_full(chat_engine, monkeypatch):
    monkeypatch.setattr(chat_engine, "max_context", 60)
    chat = Chat(chat_engine, 8, Sampling(greedy=True))
    out = []
    for k in range(4):
        chat.turn(f"message number {k} " + "pad " * 8, out.append)
    assert "dropped the" in "".join(out)
    assert chat.history[-2]["content"].startswith("message number 3")
    assert all(not m["content"].startswith("message number 0") for m in chat.history)
