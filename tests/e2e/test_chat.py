"""Chat engine and terminal chat: equality with HF generate, stop strings, streaming, history."""

import pytest

from applications.chat_engine import Sampling


@pytest.mark.slow
def test_piped_questions_are_echoed_and_prompt_is_one_shot(chat_engine, tmp_path, capsys):
    import subprocess
    import sys

    from applications.cli import main

    run = subprocess.run([sys.executable, "chat.py", "--model", "tiny", "--template", "plain", "--greedy",
                          "--max_new_tokens", "4"], input="what is the sea\nquit\n", capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = chat_engine.reply([{"role": "user", "content": "what is the sea"}], 4, Sampling(greedy=True)).text
    assert f"Human: what is the sea\nAssistant: {expected}" in run.stdout
    assert main(["--model", "tiny", "--template", "plain", "--greedy", "--max_new_tokens", "4",
                 "--prompt", "what is the sea"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Human: what is the sea\nAssistant: {expected}") and "Chatting with" not in out
