"""The bundled ``calculator`` tool: arithmetic through an ``ast`` whitelist (never ``eval``).

Numbers, + - * / // % **, unary minus and parentheses; anything else (names, calls, attributes,
strings) is refused with an error that says what was found. Exponents are capped, and so is the
size of every intermediate result, so a call cannot hang the rollout or fill the memory.
"""
from __future__ import annotations

import ast
import math
import operator

MAX_EXPONENT = 64               # 2 ** 64 is fine; 9 ** 9 ** 9 is refused
MAX_DIGITS = 100                # no intermediate result over 10^100
MAX_LENGTH = 200                # characters in an expression

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message says why."""


def _check(x):
    if isinstance(x, float) and not math.isfinite(x):
        raise CalculatorError("the result is not a finite number")
    if abs(x) >= 10 ** MAX_DIGITS:
        raise CalculatorError(f"a result over 10^{MAX_DIGITS}")
    return x


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is over {MAX_EXPONENT}")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero")
        return _check(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise CalculatorError(f"only numbers, + - * / // % ** and parentheses are allowed, found {what}")


def _format(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(round(x, 10)) if isinstance(x, float) else str(x)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: Arithmetic with numbers, + - * / // % ** and parentheses, e.g. "(17 + 25) * 3".
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression is {len(expression)} characters, over {MAX_LENGTH}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"not an arithmetic expression: {e.msg}") from None
    return _format(_eval(tree))
