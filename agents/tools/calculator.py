"""The `calculator` tool: safe evaluation of one arithmetic expression.

The expression is parsed with `ast` and walked by a small evaluator that knows only
numbers, + - * / // % **, unary + and -, parentheses, and an allow-list of math functions
and constants; anything else (names, attributes, subscripts, other calls) is rejected
before evaluation. Nothing is passed to `eval`. Every intermediate result is bounded
(integers to `MAX_INT_BITS` bits, floats to finite values) and a power whose result would
exceed that bound is refused before it is computed, so `9**9**9` fails in microseconds
instead of hanging a worker thread. That bound also keeps the run time of any accepted
expression tiny, which is why the tool ignores `time_limit_s`.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agents.tools.base import ToolError, ToolResult, run_guarded

Number = int | float

MAX_EXPRESSION_CHARS = 1_000
# About 1,200 decimal digits: ample for arithmetic an agent needs, and small enough that
# every operation on such numbers (and printing them) is instant.
MAX_INT_BITS = 4_096
# round()'s ndigits: beyond float precision it means nothing, and a huge negative value
# makes int rounding build 10**-ndigits.
MAX_ROUND_DIGITS = 400

# The text after the last marker is the expression: LLM output often says what it is
# about to compute before writing the expression.
_MARKER = re.compile(r"calculat(?:e|or)\s*:", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class _Function:
    call: Callable[..., Number]
    min_args: int
    max_args: int | None  # None: any number (min, max)


def _round(value: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(value)
    if not isinstance(ndigits, int):
        raise ToolError("round(): the number of digits must be an integer")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round(): the number of digits must be within ±{MAX_ROUND_DIGITS}")
    return round(value, ndigits)


def _min(*values: Number) -> Number:
    return min(values)


def _max(*values: Number) -> Number:
    return max(values)


_FUNCTIONS: dict[str, _Function] = {
    "sqrt": _Function(math.sqrt, 1, 1),
    "log": _Function(math.log, 1, 2),  # log(x) is natural; log(x, base)
    "log2": _Function(math.log2, 1, 1),
    "log10": _Function(math.log10, 1, 1),
    "exp": _Function(math.exp, 1, 1),
    "sin": _Function(math.sin, 1, 1),
    "cos": _Function(math.cos, 1, 1),
    "tan": _Function(math.tan, 1, 1),
    "floor": _Function(math.floor, 1, 1),
    "ceil": _Function(math.ceil, 1, 1),
    "abs": _Function(abs, 1, 1),
    "round": _Function(_round, 1, 2),
    "min": _Function(_min, 1, None),
    "max": _Function(_max, 1, None),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_OPERATOR_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


def extract_expression(argument: str) -> str:
    """The expression in a tool argument.

    After the last "calculate:" / "calculator:" marker (any case) the expression runs to
    the end of that line, because models tend to keep talking after it; without a marker
    the whole argument is the expression. Backticks and a trailing "=" or "?" are dropped.
    """
    markers = list(_MARKER.finditer(argument))
    if markers:
        rest = argument[markers[-1].end() :].lstrip()
        text = rest.splitlines()[0] if rest else ""
    else:
        text = argument
    return text.strip().rstrip("=?").strip().strip("`").strip()


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raises ToolError with a readable reason."""
    if not expression:
        raise ToolError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        raise ToolError(f"not a valid expression: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        # ValueError: e.g. an integer literal too long to convert.
        raise ToolError(f"not a valid expression: {error}") from None
    try:
        return _eval(tree.body)
    except RecursionError:
        raise ToolError("expression is nested too deeply") from None
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result too large") from None
    except (ValueError, TypeError) as error:
        # math domain errors, such as sqrt(-1) or log(0)
        raise ToolError(str(error)) from None


def format_number(value: Number) -> str:
    """Integers exactly; floats to 15 significant digits, which hides binary noise
    (0.1 + 0.2 -> 0.3) and shows integral floats as integers (sqrt(16) -> 4)."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".15g")


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True + 1 is not arithmetic an agent means.
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"unsupported constant {node.value!r}: only numbers are allowed")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        raise ToolError(f"unsupported operator {type(node.op).__name__}")
    if isinstance(node, ast.BinOp):
        return _binary(node)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _FUNCTIONS:
            raise ToolError(f"{node.id} is a function: call it, as in {node.id}(x)")
        raise ToolError(f"unknown name {node.id!r}; allowed constants: {_names(_CONSTANTS)}")
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Attribute):
        raise ToolError(f"attribute access ({node.attr!r}) is not allowed")
    raise ToolError(f"unsupported syntax: {type(node).__name__}")


def _binary(node: ast.BinOp) -> Number:
    if isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not supported: use ** for powers")
    symbol = _OPERATOR_SYMBOLS.get(type(node.op))
    if symbol is None:
        raise ToolError(f"unsupported operator {type(node.op).__name__}")
    left = _eval(node.left)
    right = _eval(node.right)
    match node.op:
        case ast.Add():
            result: Number | complex = left + right
        case ast.Sub():
            result = left - right
        case ast.Mult():
            result = left * right
        case ast.Div():
            result = left / right
        case ast.FloorDiv():
            result = left // right
        case ast.Mod():
            result = left % right
        case _:
            _check_power(left, right)
            result = left**right
    if isinstance(result, complex):
        # e.g. (-8) ** (1/3): Python answers with a complex number.
        raise ToolError(f"{symbol} gives a complex result, which is not supported")
    return _checked(result)


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse an integer power whose result would exceed MAX_INT_BITS, before computing it.

    Float powers need no check: they raise OverflowError or give inf, both caught.
    """
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0:
        return
    if abs(base) <= 1:
        return  # 0, 1 and -1 to any power stay small
    # |base|**exponent has more than (bit_length - 1) * exponent bits.
    if (abs(base).bit_length() - 1) * exponent >= MAX_INT_BITS:
        raise ToolError(f"result too large (more than {MAX_INT_BITS} bits)")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name):
        if isinstance(node.func, ast.Attribute):
            raise ToolError(f"attribute access ({node.func.attr!r}) is not allowed")
        raise ToolError("only the allowed functions can be called")
    name = node.func.id
    function = _FUNCTIONS.get(name)
    if function is None:
        raise ToolError(f"function {name!r} is not allowed; allowed: {_names(_FUNCTIONS)}")
    if node.keywords:
        raise ToolError(f"{name}(): keyword arguments are not supported")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ToolError(f"{name}(): * arguments are not supported")
    count = len(node.args)
    if count < function.min_args or (function.max_args is not None and count > function.max_args):
        raise ToolError(f"{name}() takes {_arity(function)}, got {count}")
    args = [_eval(arg) for arg in node.args]
    return _checked(function.call(*args))


def _checked(value: Number) -> Number:
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ToolError(f"result too large (more than {MAX_INT_BITS} bits)")
    elif not math.isfinite(value):
        raise ToolError("result is not a finite number (overflow)")
    return value


def _arity(function: _Function) -> str:
    if function.max_args is None:
        return f"at least {function.min_args} argument(s)"
    if function.min_args == function.max_args:
        return f"{function.min_args} argument(s)"
    return f"{function.min_args} to {function.max_args} arguments"


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


@dataclass(slots=True, frozen=True)
class CalculatorTool:
    """Evaluates one arithmetic expression; the result is the number as text."""

    name: str = "calculator"
    description: str = (
        "Evaluates one arithmetic expression, e.g. 'calculate: (3.5 * 2**10) / sqrt(7)'. "
        "Supports + - * / // % **, parentheses, sqrt, log, log2, log10, exp, sin, cos, tan, "
        "floor, ceil, abs, round, min, max and the constants pi, e, tau."
    )

    def run(self, argument: str, *, time_limit_s: float) -> ToolResult:
        # time_limit_s is ignored: the size bounds keep every evaluation far below it.
        return run_guarded(lambda: format_number(evaluate(extract_expression(argument))))
