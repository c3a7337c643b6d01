"""Chat with a trained model in the terminal, or serve it over an OpenAI-compatible API.

    python chat.py [--model DIR] [--greedy] [--max_new_tokens N]
    python chat.py --serve [--host 127.0.0.1] [--port 8000]

See ``python chat.py --help`` and ``applications/cli.py``.
"""
import sys

from applications.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
