"""The project's import graph: cycles between modules and between rooms (packages), and the leaves.

    python scripts/dev/layers.py            # prints the rooms, their imports, and any cycle; exit 1 on a cycle

A room is a package folder (``training/utils/rl/``, ``inference/``, ...) or a single module
(``training/utils/losses.py``). Imports are read from the source (absolute and relative, at module
level or inside functions), so a lazy import counts like any other.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("train.py", "chat.py", "training", "inference", "applications", "launch", "scripts")
ROOMS = ("training/utils/config", "training/utils/rl", "training/utils/data", "training/utils/model",
         "training/utils/labels", "inference",
         "applications", "launch", "scripts", "training/step1_supervised_finetuning",
         "training/step2_reward_model_finetuning", "training/step3_rlhf_finetuning", "training/configs")


def room(path: str) -> str:
    return next((r + "/" for r in ROOMS if path.startswith(r + "/")), path)


def _module_file(dotted: str):
    base = ROOT / dotted.replace(".", "/")
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(ROOT).as_posix()
    return None


def imports(rel: str) -> set[str]:
    """The project files that ``rel`` imports (a package's ``__init__.py`` for ``from pkg import name``
    when ``name`` is not a module of its own)."""
    out = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = Path(rel).parent.parts
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(list(pkg) + ([node.module] if node.module else []))
            for a in node.names:
                sub = _module_file(f"{base}.{a.name}") if base else None
                names.append(f"{base}.{a.name}" if sub else base)
        for n in names:
            f = _module_file(n) if n else None
            if f and f != rel:
                out.add(f)
    return out


def files() -> list[str]:
    out = []
    for s in SOURCES:
        p = ROOT / s
        out += [p.relative_to(ROOT).as_posix()] if p.is_file() else \
            sorted(q.relative_to(ROOT).as_posix() for q in p.rglob("*.py"))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def face(rel: str) -> bool:
    """A package ``__init__`` that only re-exports (no class or function of its own): left out of the graph."""
    body = ast.parse((ROOT / rel).read_text()).body
    return rel.endswith("__init__.py") and not any(isinstance(n, (ast.ClassDef, ast.FunctionDef)) for n in body)


def graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(file -> files it imports, room -> rooms it imports), package ``__init__`` faces left out."""
    faces = {f for f in files() if face(f)}
    by_file = {f: {g for g in imports(f) if g not in faces} for f in files() if f not in faces}
    by_room: dict[str, set[str]] = defaultdict(set)
    for f, gs in by_file.items():
        by_room[room(f)] |= {room(g) for g in gs if room(g) != room(f)}
    return by_file, dict(by_room)


def main() -> int:
    by_file, by_room = graphs()
    for r in sorted(by_room):
        print(f"{r:45s} -> {', '.join(sorted(by_room[r])) or '(a leaf)'}")
    bad = [("files", c) for c in cycles(by_file)] + [("rooms", c) for c in cycles(by_room)]
    for kind, c in bad:
        print(f"CYCLE between {kind}: {' <-> '.join(c)}")
    print(f"{len(by_file)} files, {len(by_room)} rooms, {sum(map(len, by_room.values()))} imports between rooms, "
          f"{len(bad)} cycle(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
