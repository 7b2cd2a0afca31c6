"""The agent-program DSL: validation errors a program author sees, walking a program,
and the built-in plan_execute."""

from __future__ import annotations

import re

import pytest

from agents import BUILTIN_PROGRAMS, Program, ProgramError, plan_execute
from agents.distributions import Constant, Uniform
from agents.dsl import (
    MAX_BRANCHES,
    MAX_DEPTH,
    MAX_ITERATIONS,
    Join,
    JoinKind,
    Llm,
    Loop,
    Node,
    Parallel,
    Tool,
    walk,
)

from ..factories import llm, program

ANSWER = llm("answer")


def par(name: str, *body: Node, **fields: object) -> Parallel:
    options: dict[str, object] = {"branches": Constant(2.0)}
    options.update(fields)
    return Parallel(name, body=body, **options)  # type: ignore[arg-type]


def loop(name: str, *body: Node, **fields: object) -> Loop:
    options: dict[str, object] = {"iterations": Constant(2.0), "max_iterations": 4}
    options.update(fields)
    return Loop(name, body=body, **options)  # type: ignore[arg-type]


def test_plan_execute_is_planner_parallel_workers_synthesizer() -> None:
    prog = plan_execute(workers=4)
    assert [n.name for n in prog.body] == ["planner", "workers", "synthesizer"]
    workers = prog.body[1]
    assert isinstance(workers, Parallel)
    assert workers.branches == Constant(4)
    assert workers.branches_from_output
    assert workers.max_branches == 8
    assert workers.join.kind is JoinKind.CONCAT
    assert [n.name for n in workers.body] == ["worker"]
    assert isinstance(prog.body[-1], Llm)  # the synthesizer answers
    assert prog.source  # the published shape it follows


def test_builtin_programs_are_keyed_by_name() -> None:
    assert "plan_execute" in BUILTIN_PROGRAMS
    assert BUILTIN_PROGRAMS["plan_execute"] == plan_execute()
    assert all(name == p.name for name, p in BUILTIN_PROGRAMS.items())


def test_walk_lists_every_node_depth_first_with_its_path() -> None:
    judge = llm("judge")
    prog = program(
        llm("first"),
        par("fan", llm("a"), loop("inner", llm("b")), join=Join(JoinKind.BEST, judge)),
        ANSWER,
    )
    assert [(path, n.name) for path, n in walk(prog.body)] == [
        ("body[0]", "first"),
        ("body[1]", "fan"),
        ("body[1].body[0]", "a"),
        ("body[1].body[1]", "inner"),
        ("body[1].body[1].body[0]", "b"),
        ("body[1].join.evaluator", "judge"),
        ("body[2]", "answer"),
    ]


def test_valid_nesting_and_templates_are_accepted() -> None:
    program(
        llm("plan", "{input} {output}"),
        loop(
            "rounds",
            par("fan", llm("w", "{branch}/{branches} round {iteration}: {output}")),
            Tool("look", argument="{iteration} {input}"),
        ),
        par("outer", loop("l", llm("s", "{branch} {iteration}"))),
        ANSWER,
    )


def test_an_evaluator_may_count_the_branches_but_not_be_one() -> None:
    judge = llm("judge", "pick one of {branches}")
    program(par("p", llm("a"), join=Join(JoinKind.BEST, judge)), ANSWER)
    with pytest.raises(ProgramError, match=r"\(judge\)\.instruction: \{branch\} is only"):
        program(par("p", llm("a"), join=Join(JoinKind.BEST, llm("judge", "{branch}"))), ANSWER)


def nested(depth: int) -> Node:
    node: Node = llm("leaf")
    for level in range(depth):
        node = par(f"p{level}", node)
    return node


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ((), r"program 'prog', body: must contain at least one step"),
        ((llm("a"), llm("a")), r"body\[1\] \(a\): duplicate step name 'a'"),
        ((llm("a"), par("p", llm("a")), ANSWER), r"body\[1\] \(p\)\.body\[0\] \(a\): duplicate"),
        (
            (par("p", llm("w"), join=Join(JoinKind.BEST, llm("w"))), ANSWER),
            r"join\.evaluator\[0\] \(w\): duplicate step name 'w'",
        ),
        ((llm("Bad-Name"),), r"body\[0\] \(Bad-Name\): names are lower_snake_case"),
        (
            (llm("a", "{nope}"),),
            r"body\[0\] \(a\)\.instruction: unknown template variable \{nope\}",
        ),
        ((llm("a", "{0}"),), r"unknown template variable \{0\}"),
        ((llm("a", "{"),), r"body\[0\] \(a\)\.instruction: malformed template"),
        ((llm("a", "{branch}"),), r"\{branch\} is only defined inside a Parallel"),
        ((llm("a", "{branches}"),), r"\{branches\} is only defined inside a Parallel"),
        ((llm("a", "{iteration}"),), r"\{iteration\} is only defined inside a Loop"),
        (
            (loop("l", llm("a", "{branch}")), ANSWER),
            r"body\[0\] \(l\)\.body\[0\] \(a\)\.instruction: \{branch\} is only defined inside",
        ),
        (
            (par("p", llm("a", "{iteration}")), ANSWER),
            r"\{iteration\} is only defined inside a Loop",
        ),
        (
            (Tool("t", argument="{branch}"), ANSWER),
            r"body\[0\] \(t\)\.argument: \{branch\} is only defined inside a Parallel",
        ),
        (
            (par("p", llm("w"), join=Join(JoinKind.BEST, llm("judge", "{branch}"))), ANSWER),
            r"\(judge\)\.instruction: \{branch\} is only defined inside a Parallel",
        ),
        ((llm("a", max_tokens=Constant(0.0)),), r"\(a\)\.max_tokens: must allow at least 1 token"),
        (
            (Tool("t", tool="calculator", time_limit_s=0.0), ANSWER),
            r"\(t\)\.time_limit_s: must be in \(0, 3600\], got 0\.0",
        ),
        (
            (Tool("t", time_limit_s=float("inf")), ANSWER),
            r"\(t\)\.time_limit_s: must be in \(0, 3600\], got inf",
        ),
        ((llm("a", temperature=2.5),), r"\(a\)\.temperature: must be between 0 and 2, got 2\.5"),
        (
            (llm("a", temperature=float("nan")),),
            r"\(a\)\.temperature: must be between 0 and 2, got nan",
        ),
        ((llm("a\n"),), r"body\[0\] \(a\n\): names are lower_snake_case"),
        ((llm("a", "{input:{branch}}"),), r"\{branch\} is only defined inside a Parallel"),
        (
            (loop("l", llm("a"), max_iterations=MAX_ITERATIONS + 1), ANSWER),
            r"\(l\)\.max_iterations: must be between 1 and 64 \(loops are always bounded\)",
        ),
        (
            (loop("l", llm("a"), iterations=Constant(1.0), max_iterations=0), ANSWER),
            r"\(l\)\.max_iterations: must be between 1 and 64",
        ),
        (
            (loop("l", llm("a"), iterations=Uniform(1.0, 10.0), max_iterations=8), ANSWER),
            r"\(l\)\.iterations: can reach 10, over max_iterations \(8\)",
        ),
        (
            (loop("l", llm("a"), iterations=Constant(5.0), max_iterations=4), ANSWER),
            r"\(l\)\.iterations: can reach 5, over max_iterations \(4\)",
        ),
        (
            (par("p", llm("a"), join=Join(JoinKind.BEST)), ANSWER),
            r"\(p\)\.join: an evaluator is required for 'best' and only allowed there",
        ),
        (
            (par("p", llm("a"), join=Join(JoinKind.VOTE, llm("judge"))), ANSWER),
            r"\(p\)\.join: an evaluator is required for 'best' and only allowed there",
        ),
        (
            (par("p", llm("a"), join=Join(JoinKind.CONCAT, llm("judge"))), ANSWER),
            r"\(p\)\.join: an evaluator is required",
        ),
        (
            (par("p", llm("a"), branches=Constant(MAX_BRANCHES + 1.0)), ANSWER),
            r"\(p\)\.branches: at most 64 branches",
        ),
        (
            (par("p", llm("a"), max_branches=MAX_BRANCHES + 1), ANSWER),
            r"\(p\)\.max_branches: must be between 1 and 64",
        ),
        (
            (par("p", llm("a"), branches=Constant(0.0)), ANSWER),
            r"\(p\)\.branches: must allow at least 1 branch",
        ),
        (
            (par("p", llm("a"), max_branches=0), ANSWER),
            r"\(p\)\.max_branches: must be between 1 and 64",
        ),
        ((par("p"), ANSWER), r"body\[0\] \(p\)\.body: must contain at least one step"),
        ((nested(MAX_DEPTH + 1), ANSWER), r"nested deeper than 8 levels"),
        ((llm("a"), Tool("t")), r"the last top-level step must be an llm step \(the answer\)"),
        ((par("p", llm("a")),), r"the last top-level step must be an llm step"),
        ((loop("l", llm("a")),), r"the last top-level step must be an llm step"),
    ],
)
def test_invalid_programs_are_rejected_with_the_place_named(
    body: tuple[Node, ...], message: str
) -> None:
    with pytest.raises(ProgramError, match=message) as error:
        program(*body)
    assert str(error.value).startswith("program 'prog'")


def test_nesting_up_to_the_depth_limit_is_accepted() -> None:
    prog = program(nested(MAX_DEPTH), ANSWER)
    assert max(path.count(".body") for path, _ in walk(prog.body)) == MAX_DEPTH


def test_a_bad_program_name_is_rejected() -> None:
    with pytest.raises(ProgramError, match=r"program 'Plan Execute': names are lower_snake_case"):
        program(ANSWER, name="Plan Execute")


def test_program_errors_are_value_errors() -> None:
    # Callers that load programs from YAML catch ValueError for every bad input.
    with pytest.raises(ValueError, match=re.escape("program 'prog'")):
        program()


def test_plan_execute_rejects_more_workers_than_the_dsl_allows() -> None:
    with pytest.raises(ProgramError, match=r"\(workers\)\.branches: at most 64 branches"):
        plan_execute(workers=65)


def test_plan_execute_rejects_more_workers_than_max_branches() -> None:
    with pytest.raises(ProgramError, match=r"\(workers\)\.branches"):
        plan_execute(workers=9)


def test_program_is_immutable_data() -> None:
    prog = plan_execute()
    with pytest.raises(AttributeError):
        prog.name = "other"  # type: ignore[misc]
    assert prog == plan_execute()
    assert Program(prog.name, prog.description, prog.system, prog.body, prog.source) == prog
