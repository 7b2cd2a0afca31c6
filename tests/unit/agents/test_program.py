"""The agent-program DSL: validation errors a program author sees, dependency queries,
and the built-in library."""

from __future__ import annotations

import re

import pytest

from agents import BUILTIN_PROGRAMS, LlmStep, Program, ProgramError, plan_execute

from ..factories import llm_step, program


def test_plan_execute_is_planner_workers_synthesizer() -> None:
    prog = plan_execute(workers=4)
    assert [s.name for s in prog.steps] == ["planner", "worker", "synthesizer"]
    assert prog.step("worker").fanout == 4
    assert prog.step("worker").fanout_from == "planner"
    assert [s.name for s in prog.steps if s.answer] == ["synthesizer"]
    assert prog.expected_llm_calls() == 1 + 4 + 1


def test_builtin_programs_are_keyed_by_name() -> None:
    assert set(BUILTIN_PROGRAMS) == {"plan_execute"}
    assert BUILTIN_PROGRAMS["plan_execute"].expected_llm_calls() == 5


def test_expected_llm_calls_sums_fanouts() -> None:
    prog = program(
        llm_step("a"),
        llm_step("b", "a", fanout=3),
        llm_step("c", "a", fanout=2),
        llm_step("d", "b", "c", answer=True),
    )
    assert prog.expected_llm_calls() == 7


def test_ancestors_are_transitive_and_in_program_order() -> None:
    prog = program(
        llm_step("a"),
        llm_step("x"),
        llm_step("b", "a"),
        llm_step("c", "a"),
        llm_step("d", "c", "b", answer=True),
    )
    assert prog.ancestors("d") == ("a", "b", "c")
    assert prog.ancestors("b") == ("a",)
    assert prog.ancestors("a") == ()
    assert prog.ancestors("x") == ()


def test_unknown_step_lookup_names_program_and_step() -> None:
    with pytest.raises(ProgramError, match=r"program 'prog': no step named 'nope'"):
        program(llm_step("a", answer=True)).step("nope")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), r"program 'prog': has no steps"),
        (
            (llm_step("a"), llm_step("a", answer=True)),
            r"program 'prog', step 'a': duplicate step name",
        ),
        (
            (llm_step("a", "b"), llm_step("b", answer=True)),
            r"step 'a': 'after' names 'b', which is not an earlier step",
        ),
        (
            (llm_step("a", "ghost", answer=True),),
            r"step 'a': 'after' names 'ghost', which is not an earlier step",
        ),
        (
            (llm_step("a", "a", answer=True),),
            r"step 'a': 'after' names 'a', which is not an earlier step",
        ),
        (
            (llm_step("a"), llm_step("p"), llm_step("b", "a", fanout_from="p", answer=True)),
            r"step 'b': fanout_from 'p' must be in 'after'",
        ),
        ((llm_step("a", max_tokens=0, answer=True),), r"step 'a': max_tokens must be >= 1, got 0"),
        (
            (llm_step("a", fanout=0), llm_step("z", "a", answer=True)),
            r"step 'a': fanout must be in 1\.\.fanout_max \(8\), got 0",
        ),
        (
            (llm_step("a", fanout=5, fanout_max=4), llm_step("z", "a", answer=True)),
            r"step 'a': fanout must be in 1\.\.fanout_max \(4\), got 5",
        ),
        ((llm_step("a"),), r"needs exactly one answer step, has 0"),
        (
            (llm_step("a", answer=True), llm_step("b", answer=True)),
            r"exactly one answer step, has 2",
        ),
        (
            (llm_step("a", fanout=2, answer=True),),
            r"step 'a': the answer step cannot fan out",
        ),
        (
            (llm_step("p"), llm_step("a", "p", fanout_from="p", answer=True)),
            r"step 'a': the answer step cannot fan out",
        ),
        (
            (llm_step("a", answer=True), llm_step("b", "a")),
            r"step 'a': no step may come after the answer step",
        ),
    ],
)
def test_invalid_programs_are_rejected_with_the_step_named(
    steps: tuple[LlmStep, ...], message: str
) -> None:
    with pytest.raises(ProgramError, match=message):
        program(*steps)


def test_program_errors_are_value_errors() -> None:
    # Callers that load programs from YAML catch ValueError for every bad input.
    with pytest.raises(ValueError, match=re.escape("program 'prog'")):
        program()


def test_plan_execute_rejects_more_workers_than_fanout_max() -> None:
    with pytest.raises(ProgramError, match=r"step 'worker': fanout must be in 1\.\.fanout_max"):
        plan_execute(workers=9)


def test_program_is_immutable_data() -> None:
    prog = plan_execute()
    with pytest.raises(AttributeError):
        prog.name = "other"  # type: ignore[misc]
    assert prog == plan_execute()
    assert isinstance(prog.steps[0], LlmStep)
    assert Program(prog.name, prog.description, prog.system, prog.steps) == prog
