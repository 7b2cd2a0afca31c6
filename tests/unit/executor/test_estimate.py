"""Expected cost of a program by seeded Monte Carlo over the interpreter (estimate.py)."""

from __future__ import annotations

import pytest

from agents import plan_execute
from agents.distributions import Constant, Empirical, Uniform
from agents.dsl import Join, JoinKind, Loop, Parallel, Tool
from orchestrator.domain import AgentStepInfo, Mode
from orchestrator.executor.estimate import (
    Expectation,
    TaskShape,
    approximate_encoder,
    describe,
    dry_run,
    expect,
)
from orchestrator.executor.interpreter import Interpreter

from ..factories import interpreter, llm, program, spec


def test_plan_execute_costs_five_calls_every_time() -> None:
    it = interpreter(plan_execute(3))
    expected = expect(it, spec("plan_execute", "x " * 32), samples=20)
    assert expected.tasks == 20
    assert (expected.llm_calls, expected.tool_calls) == (5.0, 0.0)
    assert expected.output_tokens == 64 + 3 * 48 + 64
    shape = dry_run(it, spec("plan_execute", "x " * 32), 0)
    assert expected.prompt_tokens == shape.prompt_tokens
    assert expected.token_amplification == pytest.approx(shape.token_amplification)
    assert expected.max_context == shape.max_context


def test_shape_counts_follow_metrics_md() -> None:
    it = interpreter(program(llm("a", max_tokens=10), llm("answer", max_tokens=4)))
    shape = dry_run(it, spec(user_input="abcd"), 0)
    assert shape.user_input_tokens == 4
    assert shape.final_output_tokens == 4
    assert shape.output_tokens == 14
    base = shape.user_input_tokens + shape.final_output_tokens
    assert shape.token_amplification == (shape.prompt_tokens + shape.output_tokens) / base
    assert TaskShape(0, 0, 10, 10, 0, 0, 0).token_amplification == 0.0


def test_expected_calls_match_the_distributions_means() -> None:
    prog = program(
        Parallel("fan", body=(llm("w"),), branches=Empirical((1.0, 3.0)), max_branches=3),
        Loop("l", body=(llm("s"),), iterations=Uniform(0.5, 3.5), max_iterations=4),
        Tool("t", result_tokens=Constant(5.0)),
        llm("answer"),
    )
    expected = expect(interpreter(prog), spec(), samples=2000)
    # 2 workers + 2 iterations (rounding spreads 0.5..3.5 evenly over 1, 2, 3) + answer.
    assert expected.llm_calls == pytest.approx(2 + 2 + 1, rel=0.03)
    assert expected.tool_calls == 1.0


def test_expectations_are_seeded_and_use_synthetic_mode() -> None:
    prog = program(llm("a", max_tokens=Uniform(1, 50)), llm("answer"))
    it = interpreter(prog)
    first = expect(it, spec(), samples=50, seed=3)
    assert first == expect(it, spec(), samples=50, seed=3)
    assert first != expect(it, spec(), samples=50, seed=4)
    assert expect(it, spec(mode=Mode.LIVE), samples=50, seed=3) == first


def test_approximate_encoder_counts_about_four_characters_per_token() -> None:
    encoder = approximate_encoder()
    assert len(encoder("x" * 400)) == 100
    assert len(encoder("")) == 1
    assert encoder.bos == (1,)


def test_describe_lists_every_node_with_its_mean() -> None:
    prog = program(
        Parallel(
            "fan",
            body=(Tool("look", result_tokens=Uniform(10, 20)),),
            branches=Uniform(1, 4),
            max_branches=4,
        ),
        Loop("l", body=(llm("s", max_tokens=6),), iterations=Constant(2.0), max_iterations=2),
        Parallel(
            "best",
            body=(llm("b"),),
            branches=Constant(2.0),
            join=Join(JoinKind.BEST, llm("judge", max_tokens=Uniform(10, 30))),
        ),
        llm("answer", max_tokens=Empirical((2.0, 4.0))),
        name="shape",
    )
    info = describe(prog, Expectation(10, 7.5, 2.5, 100.0, 50.0, 3.25, 400))
    assert (info.name, info.description) == ("shape", "test program")
    assert (info.expected_llm_calls, info.expected_token_amplification) == (7.5, 3.25)
    assert info.steps == (
        AgentStepInfo("fan", "parallel", "body[0]", 0.0, 2.5),
        AgentStepInfo("look", "tool", "body[0].body[0]", 15.0, 1.0),
        AgentStepInfo("l", "loop", "body[1]", 0.0, 2.0),
        AgentStepInfo("s", "llm", "body[1].body[0]", 6.0, 1.0),
        AgentStepInfo("best", "parallel", "body[2]", 0.0, 2.0),
        AgentStepInfo("b", "llm", "body[2].body[0]", 8.0, 1.0),
        AgentStepInfo("judge", "llm", "body[2].join.evaluator", 20.0, 1.0),
        AgentStepInfo("answer", "llm", "body[3]", 3.0, 1.0),
    )


def test_dry_run_uses_the_encoder_it_is_given() -> None:
    prog = plan_execute()
    exact = dry_run(interpreter(prog), spec("plan_execute", "x" * 400), 0)
    approximate = dry_run(
        Interpreter(prog, approximate_encoder()), spec("plan_execute", "x" * 400), 0
    )
    assert exact.user_input_tokens == 400
    assert approximate.user_input_tokens == 100
    assert exact.llm_calls == approximate.llm_calls == 5
