"""The calculator tool: arithmetic an agent asks for, and everything it must refuse."""

from __future__ import annotations

import time

import pytest

from agents.tools.calculator import CalculatorTool, extract_expression

calculator = CalculatorTool()


def calc(argument: str) -> str:
    result = calculator.run(argument, time_limit_s=1.0)
    assert result.ok, result.text
    return result.text


def calc_error(argument: str) -> str:
    result = calculator.run(argument, time_limit_s=1.0)
    assert not result.ok, result.text
    assert result.text.startswith("error: ")
    return result.text


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** 10", "1024"),
        ("-3 ** 2", "-9"),
        ("+5 - -2", "7"),
        ("2 ** -1", "0.5"),
        ("0.1 + 0.2", "0.3"),
        ("1e3 * 3", "3000"),
        ("sqrt(16)", "4"),
        ("sqrt(2)", "1.4142135623731"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("exp(0) + sin(0) + cos(0)", "2"),
        ("round(pi, 2)", "3.14"),
        ("round(2.5)", "2"),
        ("abs(-4.5)", "4.5"),
        ("min(3, 1, 2) + max(3, 1, 2)", "4"),
        ("80 * 1024**3 / 3.35e12", "0.0256415957970149"),
        ("2 ** 64", "18446744073709551616"),
    ],
)
def test_evaluates_arithmetic(expression: str, expected: str) -> None:
    assert calc(expression) == expected


def test_expression_follows_the_last_marker() -> None:
    assert calc("The weights take 70 GB. Calculate: 70 / 3.35") == "20.8955223880597"
    assert calc("calculator: 1 + 1 and then CALCULATE: 2 * 21") == "42"
    # Models keep talking after the expression; the rest of the marker's line is it.
    assert calc("Calculator: 6 * 7\nThat gives the answer.") == "42"
    assert calc("  `12 * 12` = ") == "144"
    assert extract_expression("no marker, all of it ") == "no marker, all of it"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("x + 1", "unknown name 'x'"),
        ("__builtins__", "unknown name '__builtins__'"),
        ("__import__('os').system('true')", "attribute access ('system')"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("eval('1')", "function 'eval' is not allowed"),
        ("(1).real", "attribute access ('real')"),
        ("math.sqrt(4)", "attribute access ('sqrt')"),
        ("(lambda: 1)()", "only the allowed functions"),
        ("[1, 2][0]", "unsupported syntax"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 < 2", "unsupported syntax"),
        ("2 ^ 3", "use ** for powers"),
        ("round(1.5, ndigits=1)", "keyword arguments"),
        ("sqrt(1, 2)", "sqrt() takes 1 argument(s), got 2"),
        ("sqrt", "is a function"),
        ("import os", "not a valid expression"),
        ("1 +", "not a valid expression"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("(-8) ** (1 / 3)", "complex"),
        ("1e308 * 10", "not a finite number"),
        ("exp(1000)", "too large"),
        ("", "empty expression"),
    ],
)
def test_rejects_with_a_clear_reason(expression: str, reason: str) -> None:
    assert reason in calc_error(expression)


@pytest.mark.parametrize(
    "expression",
    ["9**9**9", "10**10**10", "2**(10**100)", "(10**1000)**1000", "-7**99999", "99.0**99999"],
)
def test_huge_powers_fail_fast(expression: str) -> None:
    start = time.perf_counter()
    text = calc_error(expression)
    assert time.perf_counter() - start < 0.1
    assert "too large" in text


def test_long_and_deeply_nested_input_is_refused() -> None:
    assert "longer than" in calc_error("1+" * 600 + "1")
    assert "nested too deeply" in calc_error("-" * 999 + "1")
    assert "not a valid expression" in calc_error("(" * 300 + "1" + ")" * 300)
