"""inference/prompt_eval.py: prompt files, side-by-side answers, clear errors."""

import json

import pytest

from inference import prompt_eval
from inference.passrate import eval_prompts


def test_side_by_side_from_files_and_bundled(tmp_path, capsys):
    txt = tmp_path / "p.txt"
    txt.write_text("Say hi.\n\nName a fruit.\n")
    out = tmp_path / "rows.json"
    res = prompt_eval.main(["--baseline", "tiny", "--finetune", "tiny-opt", "--prompts", str(txt),
                            "--prompt", "Count to 3.", "--max_new_tokens", "5", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert rows == res["rows"] and [r["prompt"] for r in rows] == ["Count to 3.", "Say hi.", "Name a fruit."]
    assert all(r["baseline"] != r["finetune"] for r in rows)      # two different random models
    printed = capsys.readouterr().out
    assert printed.count("==== prompt") == 3 and "---- baseline (tiny):" in printed
    # bundled held-out prompts get the checker's verdict
    res = prompt_eval.main(["--baseline", "tiny", "--finetune", "tiny", "--n", "2", "--max_new_tokens", "4"])
    assert [r["prompt"] for r in res["rows"]] == eval_prompts("dev", 2)
    assert capsys.readouterr().out.count("[fail]") == 4               # random models fail the checker


def test_prompt_files_are_validated(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a"}\n"b"\n')
    assert prompt_eval.read_prompts(str(jl)) == ["a", "b"]
    jl.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl: row 2: field 'prompt'"):
        prompt_eval.read_prompts(str(jl))
    jl.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"row 2: not valid JSON"):
        prompt_eval.read_prompts(str(jl))
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        prompt_eval.read_prompts(str(bad))
