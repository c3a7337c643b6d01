"""The ``speedchat`` command that ``pip install -e .`` installs, beside ``python train.py`` and
``python chat.py`` (which keep working):

    speedchat train [train.py flags]      # = python train.py ...
    speedchat chat  [chat.py flags]       # = python chat.py ...
    speedchat serve [chat.py flags]       # = python chat.py --serve ...
"""
from __future__ import annotations

import sys
from typing import Optional

COMMANDS = {"train": "the three stages and the report (train.py)", "chat": "chat in the terminal (chat.py)",
            "serve": "the OpenAI-compatible server and the chat page (chat.py --serve)"}


def usage() -> str:
    return "usage: speedchat {train,chat,serve} [flags]\n\n" + "\n".join(
        f"  {k:<6} {v}" for k, v in COMMANDS.items()) + "\n\n'speedchat COMMAND --help' lists a command's flags.\n"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        sys.stderr.write(f"speedchat: unknown command {cmd!r}\n" + usage())
        return 2
    if cmd == "train":
        import train

        train.main(rest)
        return 0
    from applications.cli import main as chat_main

    return chat_main(["--serve", *rest] if cmd == "serve" else rest)


if __name__ == "__main__":
    sys.exit(main())
