"""Counts of the code's shape, read from the source: the largest constructors and functions by parameter count,
the functions that take the whole config (a parameter named ``cfg``), and the places that compare an algorithm or
reward-source name (a string constant that is one of ``--algo``'s choices or a source kind's spelling, in a
comparison, a ``startswith`` or an ``in`` test).

    python scripts/dev/house.py          # the counts, then the places that compare a name
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SOURCES = ("train.py", "chat.py", "training", "inference", "applications", "launch")
NAMES_OF_SOURCES = {"checker", "model", "model:", "rule:", "judge:", "human:", "http://", "https://", "judge", "human"}


def files() -> list[Path]:
    out = []
    for s in SOURCES:
        p = ROOT / s
        out += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return out


def params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def compared_strings(node: ast.AST) -> list[str]:
    """String constants that ``node`` compares with (==, !=, in, not in, .startswith)."""
    out = []
    if isinstance(node, ast.Compare):
        for x in [node.left, *node.comparators]:
            elts = x.elts if isinstance(x, (ast.Tuple, ast.List, ast.Set)) else [x]
            out += [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
        for arg in node.args:
            elts = arg.elts if isinstance(arg, ast.Tuple) else [arg]
            out += [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return out


def main() -> None:
    from training.utils.algorithms import ALGORITHMS

    names = set(ALGORITHMS) | NAMES_OF_SOURCES
    ctors, cfg_fns, compares, wide = [], [], [], []
    for f in files():
        rel = f.relative_to(ROOT).as_posix()
        tree = ast.parse(f.read_text())
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    ctors.append((len(params(fn)), f"{rel}:{cls.name}"))
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            if "cfg" in params(fn):
                cfg_fns.append(f"{rel}:{fn.name}")
            if len(params(fn)) > 8:
                wide.append(f"{rel}:{fn.lineno} {fn.name} ({len(params(fn))})")
        for node in ast.walk(tree):
            hit = [s for s in compared_strings(node) if s in names]
            if hit:
                compares.append(f"{rel}:{node.lineno}: {', '.join(repr(h) for h in hit)}")
    ctors.sort(reverse=True)
    print(f"largest constructors: {', '.join(f'{n} {c}' for n, c in ctors[:3])}")
    print(f"functions that take cfg: {len(cfg_fns)}")
    print(f"functions with more than 8 parameters: {len(wide)}")
    for w in wide:
        print("  " + w)
    print(f"places that compare an algorithm or source name: {len(compares)}")
    for c in compares:
        print("  " + c)


if __name__ == "__main__":
    main()
