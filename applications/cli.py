"""Terminal chat and the ``--serve`` switch of ``chat.py``.

    python chat.py                                   # the main job's final model, else smollm2-135m
    python chat.py --model output/actor-models/smollm2-135m --greedy
    python chat.py --path 1.3b --max_new_tokens 128  # DeepSpeed-Chat's flag name works too
    python chat.py --serve --port 8000               # OpenAI-compatible server on 127.0.0.1
    python chat.py --serve --host 0.0.0.0 --api-key-file keys.txt   # reachable from others: keys required
    python chat.py --prompt "Write a haiku" --greedy # one question, one answer, then exit
    echo "Write a haiku" | python chat.py            # piped questions are echoed after "Human: "

In the chat: ``clear`` forgets the history, ``quit`` (or ``exit``, Ctrl-D) leaves,
``/set temperature 0.3`` / ``/set top_p 0.8`` / ``/set max_new_tokens 64`` / ``/set greedy on``
change the generation settings, ``/settings`` shows them.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from applications.chat_engine import ChatEngine, ContextOverflow, Request, Sampling

DEFAULT_FINAL = Path("output/step3-models/smollm2-135m/actor")


def default_model() -> str:
    return str(DEFAULT_FINAL) if (DEFAULT_FINAL / "config.json").is_file() else "smollm2-135m"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chat.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", "--path", dest="model", default=None,
                    help="model directory, hub id, .gguf, alias (default: the main job's final model "
                         f"{DEFAULT_FINAL} when it exists, else smollm2-135m)")
    ap.add_argument("--template", default="auto", choices=("auto", "chat", "plain"),
                    help="chat: the tokenizer's chat template; plain: ' Human: ... Assistant:'; "
                         "auto: the template when the tokenizer has one")
    ap.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top_p", "--top-p", type=float, default=0.9)
    ap.add_argument("--greedy", action="store_true", help="greedy decoding (ignores temperature/top_p)")
    ap.add_argument("--max_context", "--max-context", type=int, default=None,
                    help="context length in tokens (default: the model's); older turns are dropped to fit")
    ap.add_argument("--system", default=None, help="a system message kept at the top of the history")
    ap.add_argument("--prompt", default=None, help="ask this one question, print the answer and exit")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="weights and activations: auto is bf16 on a CUDA GPU with bf16, fp16 on older ones, fp32 "
                         "on CPU (bf16 also runs on CPU; fp16 needs a GPU)")
    ap.add_argument("--trust_remote_code", action="store_true")
    ap.add_argument("--tools", nargs="+", default=[], metavar="TOOL",
                    help="tools run for the model: bundled names (calculator) or module:function, by the terminal "
                         "chat, or with --serve for the chat page (API clients send OpenAI's tools themselves)")
    ap.add_argument("--tool_timeout", type=float, default=10.0, help="seconds a tool call may take")
    ap.add_argument("--max_turns", type=int, default=4, help="model turns per question with --tools")
    srv = ap.add_argument_group("server (--serve)")
    srv.add_argument("--serve", action="store_true", help="run the OpenAI-compatible HTTP server")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max_batch", type=int, default=16, help="most sequences generated together")
    srv.add_argument("--max_tokens_limit", type=int, default=1024, help="largest max_tokens a request may ask")
    srv.add_argument("--max_request_bytes", type=int, default=1 << 20)
    srv.add_argument("--max_queue", type=int, default=256, help="queued requests before 503 answers")
    srv.add_argument("--api-key", "--api_key", action="append", default=[], dest="api_key",
                     help="a key every /v1 request must send as 'Authorization: Bearer KEY' (repeatable; also the "
                          "SPEEDCHAT_API_KEY environment variable, comma-separated)")
    srv.add_argument("--api-key-file", "--api_key_file", default=None, dest="api_key_file",
                     help="one 'NAME KEY' (or bare KEY) per line: a key for each person or client")
    srv.add_argument("--no-auth", "--no_auth", action="store_true", dest="no_auth",
                     help="serve a non-loopback --host without any key (refused otherwise)")
    srv.add_argument("--label", default=None, metavar="FILE",
                     help="also serve a labelling page at /label for the comparisons in FILE (stage 2's "
                          "--export_for_labelling output)")
    srv.add_argument("--label-output", "--label_output", default=None, dest="label_output", metavar="FILE",
                     help="the human-label JSONL the verdicts are appended to (default: FILE.labels.jsonl beside "
                          "--label); stage 2 reads it with --labeller human:FILE")
    srv.add_argument("--collect", default=None, metavar="DIR",
                     help="record every served answer with its conversation, and the thumbs people give it, in DIR "
                          "(conversations.jsonl, feedback.jsonl); off by default: nothing is stored")
    srv.add_argument("--label-order", "--label_order", default="file", dest="label_order",
                     choices=("file", "random", "uncertain"),
                     help="the order the labelling page offers comparisons in: as the file has them, random, or "
                          "uncertain: those --label-reward-model scores closest first")
    srv.add_argument("--label-reward-model", "--label_reward_model", default=None, dest="label_reward_model",
                     metavar="DIR", help="the reward model whose margins --label-order uncertain sorts by")
    srv.add_argument("--compare", action="store_true",
                     help="with --collect: also sample a second answer to each collected prompt when the server is "
                          "idle and queue the pair on the labelling page at /label (verdicts in "
                          "DIR/comparisons.labels.jsonl)")
    srv.add_argument("--admin-key-file", "--admin_key_file", default=None, dest="admin_key_file", metavar="FILE",
                     help="a file holding the admin key, separate from the API keys, that POST /admin/reload "
                          "{\"model\": DIR} needs to swap the served weights (without it reloading is off)")
    return ap


class Chat:
    """History + settings + commands; ``input_fn``/``output_fn`` make it scriptable."""

    def __init__(self, engine: ChatEngine, max_new_tokens: int, sampling: Sampling, system: Optional[str] = None,
                 tools=None, max_turns: int = 4):
        """``tools``: a ``ToolEnvironment`` whose calls this chat runs itself, up to ``max_turns`` model turns
        per question."""
        self.engine, self.max_new_tokens, self.sampling, self.system = engine, max_new_tokens, sampling, system
        self.tools, self.max_turns = tools, max_turns
        self.history: list[dict] = []

    def messages(self, user: str) -> list[dict]:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + self.history + [{"role": "user", "content": user}]

    def settings(self) -> str:
        s = self.sampling
        how = "greedy" if s.is_greedy else f"temperature {s.temperature}, top_p {s.top_p}"
        return f"{how}, max_new_tokens {self.max_new_tokens}, template " + \
            ("chat" if self.engine.chat_format else "plain (Human/Assistant)")

    def command(self, line: str) -> str:
        parts = line.split()
        if parts[0] == "/settings":
            return self.settings()
        if parts[0] != "/set" or len(parts) != 3:
            return "commands: clear, quit, /settings, /set temperature|top_p|max_new_tokens|greedy VALUE"
        key, val = parts[1], parts[2]
        try:
            if key == "temperature":
                self.sampling.temperature = float(val)
            elif key == "top_p":
                self.sampling.top_p = float(val)
            elif key == "max_new_tokens":
                self.max_new_tokens = int(val)
            elif key == "greedy":
                self.sampling.greedy = val.lower() in ("on", "true", "1", "yes")
            else:
                return f"unknown setting {key!r}"
        except ValueError:
            return f"{key}: {val!r} is not a number"
        return self.settings()

    def turn(self, user: str, output_fn: Callable[[str], None]) -> Optional[str]:
        """The answer to ``user``; with tools, the model's calls are run and their results shown to it, until
        it answers without a call or ``max_turns`` turns."""
        schemas = self.tools.tools if self.tools is not None else None
        new = [{"role": "user", "content": user}]
        for _ in range(self.max_turns if self.tools is not None else 1):
            msgs = self.messages(user)[:-1] + new
            try:
                ids, dropped = self.engine.prompt_ids(msgs, self.max_new_tokens, schemas)
            except ContextOverflow as e:
                output_fn(f"[{e}]\n")
                return None
            if dropped:
                self.history = self.history[dropped:]      # system message and newest turn are kept
                output_fn(f"[context full: dropped the {dropped} oldest message(s)]\n")
            output_fn("Assistant: ")
            # ``ids`` already is the prompt of the trimmed history: no second rendering
            req = Request(ids, self.max_new_tokens, self.engine.default_stop, output_fn)
            done = self.engine.generate([req], self.sampling)[0]
            output_fn("\n" if done.finish_reason == "stop" else " [max_new_tokens reached]\n")
            new.append({"role": "assistant", "content": done.text})
            parsed = self.tools.parse(new) if self.tools is not None else None
            if parsed is None or not parsed.calls or done.finish_reason != "stop":
                break
            results = self.tools.executor.run(parsed.calls)
            for c, r in zip(parsed.calls, results):
                output_fn(f"[{c.name or '?'}({json.dumps(c.arguments)}) {r.status}: {r.content}]\n")
            new += [r.message() for r in results]
        self.history += new
        return done.text

    def run(self, input_fn: Callable[[str], str], output_fn: Callable[[str], None]) -> None:
        output_fn(f"Chatting with {self.engine.name} ({self.settings()}). "
                  "Type 'clear' to forget the history, 'quit' to leave.\n")
        while True:
            try:
                line = input_fn("Human: ").strip()
            except (EOFError, KeyboardInterrupt):
                output_fn("\n")
                return
            if not line:
                continue
            if line.lower() in ("quit", "exit"):
                return
            if line.lower() == "clear":
                self.history = []
                output_fn("[history cleared]\n")
            elif line.startswith("/"):
                output_fn(self.command(line) + "\n")
            else:
                self.turn(line, output_fn)


def _print(s: str) -> None:
    sys.stdout.write(s)
    sys.stdout.flush()


def echoing(read: Callable[[str], str], output_fn: Callable[[str], None]) -> Callable[[str], str]:
    """``read`` for input that is not typed (a pipe, a file): print each line read after the prompt,
    so the transcript shows the question as a terminal would."""
    def read_and_echo(prompt: str) -> str:
        line = read(prompt)
        output_fn(line + "\n")
        return line
    return read_and_echo


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = admin = None
    if a.serve and a.admin_key_file:
        try:
            admin = Path(a.admin_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"chat.py: --admin-key-file {a.admin_key_file}: {e}")
        if len(admin) < 12 or any(c.isspace() for c in admin):
            sys.exit(f"chat.py: --admin-key-file {a.admin_key_file}: the key must be one word of at least 12 "
                     "characters")
    if a.serve:              # a key problem stops the server before the model loads
        from applications.auth import AuthError, Keys, refuse_open_binding
        try:
            keys = Keys.gather(a.api_key, a.api_key_file)
            refuse_open_binding(a.host, keys, a.no_auth)
        except AuthError as e:
            sys.exit(f"chat.py: {e}")
        if admin and keys.who(f"Bearer {admin}") is not None:
            sys.exit(f"chat.py: --admin-key-file {a.admin_key_file}: the admin key is also an API key; give it its "
                     "own")
    order = {"order": a.label_order}
    if (a.label_order == "uncertain") != bool(a.label_reward_model):
        sys.exit("chat.py: --label-order uncertain and --label-reward-model DIR go together")
    if a.label_reward_model:
        from applications.labelling import reward_margin
        order["margin"] = reward_margin(a.label_reward_model, a.template)
    labels = None
    if a.serve and a.label:
        from applications.labelling import LabelStore
        from training.utils.data.sources import DataError
        out = a.label_output or str(Path(a.label).with_suffix("")) + ".labels.jsonl"
        try:
            labels = LabelStore(a.label, out, **order)
        except DataError as e:
            sys.exit(f"chat.py: --label: {e}")
    collect = None
    if a.compare and not (a.serve and a.collect):
        sys.exit("chat.py: --compare samples second answers to collected prompts: add --serve --collect DIR")
    if a.compare and a.label:
        sys.exit("chat.py: --compare serves its pairs on the labelling page: drop --label (or --compare)")
    if a.serve and a.collect:
        from applications.collect import Collector
        from training.utils.data.sources import DataError
        try:
            collect = Collector(a.collect, compare=a.compare, **order)
        except DataError as e:
            sys.exit(f"chat.py: --collect: {e}")
        labels = collect.labels or labels
    tools = None
    if a.tools:
        from training.utils.tools.environment import ToolEnvironment
        from training.utils.tools.executor import ToolExecutor
        from training.utils.tools.parsers import hermes
        from training.utils.tools.spec import ToolError, load_tools
        try:
            tools = ToolEnvironment(ToolExecutor(load_tools(a.tools), a.tool_timeout), hermes)
        except ToolError as e:         # a bad tool stops the chat before the model loads
            sys.exit(f"chat.py: {e}")
    model = a.model or default_model()
    from training.utils.config import ConfigError
    from training.utils.ds_config import resolve_dtype, torch_dtype

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dtype = torch_dtype(resolve_dtype(a.dtype, torch.device(device).type))
    except ConfigError as e:
        sys.exit(f"chat.py: --dtype {a.dtype}: {e}")
    make = functools.partial(ChatEngine, template=a.template, max_context=a.max_context, device=device, dtype=dtype,
                             trust_remote_code=a.trust_remote_code)
    engine = make(model)
    if a.serve:
        from applications.reload import Served
        from applications.server import Limits, serve
        engine = Served(engine, make, admin)
        serve(engine, a.host, a.port, Limits(max_batch=a.max_batch, max_tokens=a.max_tokens_limit,
                                             max_request_bytes=a.max_request_bytes, max_queue=a.max_queue),
              keys, a.no_auth, labels=labels, tools=tools, max_turns=a.max_turns, collect=collect)
        return 0
    chat = Chat(engine, a.max_new_tokens, Sampling(a.greedy, a.temperature, a.top_p), a.system, tools, a.max_turns)
    if a.prompt is not None:
        _print(f"Human: {a.prompt}\n")
        return 0 if chat.turn(a.prompt, _print) is not None else 1
    chat.run(input if sys.stdin.isatty() else echoing(input, _print), _print)
    return 0
