"""Helpers shared by the multiturn tests of several kinds."""


from training.utils.data.collate import pad_sequences


def _batch(tok, words):
    msgs = [[{"role": "user", "content": f"Compute for {w}: 17 times 23."}] for w in words]
    ids, mask = pad_sequences([tok(f"x {w}")["input_ids"] for w in words], tok.pad_token_id, left=True)
    return {"input_ids": ids, "attention_mask": mask, "messages": msgs, "prompt_text": [f"p {w}" for w in words],
            "columns": [{"row": i} for i in range(len(words))]}


RULES = '''
from training.utils.tools.parsers import Call, Parsed


def line_call(text):
    """A turn that is only a line break calls ping (a call the random tiny model makes ~15% of the time)."""
    return Parsed("", [Call("ping", {})]) if text.strip() == "" else Parsed(text, [])


def always_call(text):
    """Every turn calls ping."""
    return Parsed(text, [Call("ping", {})])


def ping() -> str:
    """Answers pong."""
    return "pong"


def called(prompt, answer, tool_calls):
    return 1.0 if any(c["status"] == "ok" for c in tool_calls) else 0.0
'''
