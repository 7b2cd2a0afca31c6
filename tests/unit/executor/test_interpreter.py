"""The pure interpreter: which actions run next, with which prompts and sampling, for
every node kind of the DSL (agents.dsl)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import plan_execute
from agents.distributions import Constant, Empirical, Uniform
from agents.dsl import Join, JoinKind, Llm, Loop, Parallel, Program, Tool, walk
from agents.library import react
from orchestrator.domain import Mode, Sampling, TaskSpec
from orchestrator.executor.estimate import TaskShape, dry_run
from orchestrator.executor.interpreter import (
    Action,
    ActionKind,
    Interpreter,
    Outcome,
    TaskProgress,
)

from ..factories import encode, finish, head, interpreter, llm, program, spec, start
from ..strategies import call_bounds, programs

PLAN = "1. look\n2. think\n3. write\n"
PLAN_EXECUTE = plan_execute(3)


def text_of(node: Llm, **fields: object) -> tuple[int, ...]:
    """The encoded instruction of an Llm node, rendered with `fields`."""
    values: dict[str, object] = {
        "input": "hello",
        "branch": 0,
        "branches": 0,
        "iteration": 0,
        "output": "",
    }
    values.update(fields)
    return encode(node.instruction.format(**values))


def node(prog: Program, name: str) -> Llm:
    """The Llm node called `name`, wherever it sits."""
    return next(n for _, n in walk(prog.body) if n.name == name and isinstance(n, Llm))


def contains(ids: tuple[int, ...], part: tuple[int, ...]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def run_to_end(
    it: Interpreter, task: TaskProgress, outputs: dict[str, list[str]] | None = None
) -> list[Action]:
    """Complete every action in issue order; outputs[step] gives successive texts
    (default: the step's name)."""
    queues = {k: list(v) for k, v in (outputs or {}).items()}
    issued: list[Action] = []
    pending: list[Action] = []
    for _ in range(10_000):
        new = it.advance(task, 1 << 20)
        issued += new
        pending += new
        if task.done:
            return issued
        action = pending.pop(0)
        texts = queues.get(action.step)
        finish(it, task, action, texts.pop(0) if texts else action.step)
    raise AssertionError("the task did not finish")


# ---- plan_execute -------------------------------------------------------------------


def planner_done(it: Interpreter, task: TaskProgress, plan: str = PLAN) -> Action:
    planner = only(it.advance(task, 32))
    finish(it, task, planner, plan)
    return planner


def test_planner_runs_first_and_alone() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it, "what is up")
    planner = only(it.advance(task, 32))
    assert planner.step == "planner"
    assert planner.kind is ActionKind.LLM
    assert planner.after == ()
    assert not planner.answer
    expected = head("what is up", PLAN_EXECUTE.system) + text_of(node(PLAN_EXECUTE, "planner"))
    assert planner.prompt_token_ids == expected
    assert it.advance(task, 32) == []  # nothing else may start while the plan is pending
    assert not task.done


def test_workers_prompts_are_prefix_planner_output_and_their_own_instruction() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it)
    planner = planner_done(it, task)
    workers = it.advance(task, 32)
    assert [(w.step, w.branch) for w in workers] == [("worker", 0), ("worker", 1), ("worker", 2)]
    shared = (
        head("hello", PLAN_EXECUTE.system) + text_of(node(PLAN_EXECUTE, "planner")) + encode(PLAN)
    )
    worker = node(PLAN_EXECUTE, "worker")
    for w in workers:
        assert w.prompt_token_ids == shared + text_of(worker, branch=w.branch + 1, branches=3)
        assert w.after == (planner.action_id,)
    # Each worker is told which plan step it carries out.
    assert contains(workers[1].prompt_token_ids, encode("step 2 of the plan"))
    assert len({w.action_id for w in workers} | {planner.action_id}) == 4


def test_synthesizer_sees_every_worker_in_branch_order_whatever_the_finish_order() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it)
    planner_done(it, task)
    workers = it.advance(task, 32)
    finish(it, task, workers[2], "result two")
    finish(it, task, workers[0], "result zero")
    assert it.advance(task, 32) == []
    finish(it, task, workers[1], "result one")
    synth = only(it.advance(task, 32))
    assert synth.step == "synthesizer"
    assert synth.answer
    worker = node(PLAN_EXECUTE, "worker")
    expected = (
        head("hello", PLAN_EXECUTE.system)
        + text_of(node(PLAN_EXECUTE, "planner"))
        + encode(PLAN)
        + text_of(worker, branch=1, branches=3)
        + encode("result zero")
        + text_of(worker, branch=2, branches=3)
        + encode("result one")
        + text_of(worker, branch=3, branches=3)
        + encode("result two")
        + text_of(node(PLAN_EXECUTE, "synthesizer"))
    )
    assert synth.prompt_token_ids == expected
    assert synth.after == tuple(w.action_id for w in workers)


def test_task_is_done_once_the_answer_finished() -> None:
    it = interpreter(plan_execute(2))
    task = start(it)
    planner_done(it, task)
    for worker in it.advance(task, 32):
        finish(it, task, worker, "ok")
    synth = only(it.advance(task, 32))
    assert task.answer_id == synth.action_id
    assert not task.done
    finish(it, task, synth, "final answer")
    assert it.advance(task, 32) == []
    assert task.done
    assert task.answer_text == "final answer"
    assert (task.llm_calls, task.tool_calls, task.running) == (4, 0, 0)


def test_advance_hands_out_at_most_budget_actions() -> None:
    it = interpreter(plan_execute(5))
    task = start(it)
    planner_done(it, task)
    assert [a.branch for a in it.advance(task, 2)] == [0, 1]
    assert task.running == 2
    assert it.advance(task, 0) == []
    assert it.advance(task, -1) == []
    assert [a.branch for a in it.advance(task, 2)] == [2, 3]
    assert [a.branch for a in it.advance(task, 5)] == [4]
    assert task.running == 5


def test_fanout_wider_than_the_budget_completes() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it)
    planner_done(it, task)
    first = it.advance(task, 2)
    finish(it, task, first[1], "one")
    finish(it, task, first[0], "zero")
    last = only(it.advance(task, 2))
    assert last.branch == 2
    finish(it, task, last, "two")
    synth = only(it.advance(task, 2))
    worker = node(PLAN_EXECUTE, "worker")
    sections = [
        text_of(worker, branch=b + 1, branches=3) + encode(t)
        for b, t in enumerate(("zero", "one", "two"))
    ]
    assert contains(synth.prompt_token_ids, sections[0] + sections[1] + sections[2])


def test_live_mode_fans_out_one_branch_per_non_empty_plan_line() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it, mode=Mode.LIVE)
    planner_done(it, task, "first\n\n   \nsecond\nthird\nfourth\n")
    workers = it.advance(task, 32)
    assert [w.branch for w in workers] == [0, 1, 2, 3]
    last = text_of(node(PLAN_EXECUTE, "worker"), branch=4, branches=4)
    assert workers[3].prompt_token_ids[-len(last) :] == last


@pytest.mark.parametrize(
    ("plan", "width"),
    [
        ("", 1),
        ("   \n\n", 1),
        ("only one", 1),
        ("\n".join(f"step {i}" for i in range(12)), 8),
        ("\n".join(f"step {i}" for i in range(8)), 8),
    ],
)
def test_live_fanout_is_clipped_to_one_through_max_branches(plan: str, width: int) -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it, mode=Mode.LIVE)
    planner_done(it, task, plan)
    assert len(it.advance(task, 32)) == width


def test_live_mode_without_branches_from_output_uses_the_drawn_width() -> None:
    prog = program(
        llm("plan"), Parallel("fan", body=(llm("w"),), branches=Constant(2.0)), llm("answer")
    )
    it = interpreter(prog)
    task = start(it, mode=Mode.LIVE)
    planner_done(it, task, "a\nb\nc\nd\n")
    assert len(it.advance(task, 32)) == 2


@pytest.mark.parametrize("plan", ["\n".join(f"step {i}" for i in range(6)), ""])
def test_synthetic_mode_uses_the_fixed_width_whatever_the_plan_says(plan: str) -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it, mode=Mode.SYNTHETIC)
    planner_done(it, task, plan)
    assert len(it.advance(task, 32)) == 3


def test_live_run_completes_with_every_branch_in_the_answer_prompt() -> None:
    it = interpreter(PLAN_EXECUTE)
    task = start(it, mode=Mode.LIVE)
    planner_done(it, task, "a\nb\nc\nd\ne\n")
    workers = it.advance(task, 32)
    for w in reversed(workers):
        finish(it, task, w, f"done {w.branch}")
    synth = only(it.advance(task, 32))
    worker = node(PLAN_EXECUTE, "worker")
    for b in range(5):
        section = text_of(worker, branch=b + 1, branches=5) + encode(f"done {b}")
        assert contains(synth.prompt_token_ids, section)
    finish(it, task, synth, "answer")
    it.advance(task, 32)
    assert task.done


# ---- seeds and sampling -------------------------------------------------------------


def first_sampling(prog: Program, task_spec: TaskSpec, seed: int = 0) -> dict[str, Sampling]:
    """Sampling of the first action of each step in a run of `prog`."""
    it = interpreter(prog)
    out: dict[str, Sampling] = {}
    for action in run_to_end(it, it.start("t", task_spec, seed)):
        if action.sampling is not None:
            out.setdefault(action.step, action.sampling)
    return out


def pe_spec(**fields: object) -> TaskSpec:
    return spec("plan_execute", "x", **fields)


def test_same_task_seed_gives_the_same_call_seeds() -> None:
    first = first_sampling(PLAN_EXECUTE, pe_spec(seed=7), seed=7)
    second = first_sampling(PLAN_EXECUTE, pe_spec(seed=7), seed=7)
    assert first == second
    assert all(s.seed is not None for s in first.values())


def test_call_seeds_differ_across_steps_branches_and_task_seeds() -> None:
    it = interpreter(plan_execute(8))
    actions = run_to_end(it, it.start("t", pe_spec(seed=7), 7))
    seeds = {a.sampling.seed for a in actions if a.sampling is not None}
    assert len(actions) == 10
    assert len(seeds) == 10
    seed_8 = first_sampling(PLAN_EXECUTE, pe_spec(seed=8), seed=8)
    seed_7 = first_sampling(PLAN_EXECUTE, pe_spec(seed=7), seed=7)
    assert seed_7["worker"].seed != seed_8["worker"].seed


def test_no_task_seed_means_unseeded_calls() -> None:
    assert all(s.seed is None for s in first_sampling(PLAN_EXECUTE, pe_spec()).values())


def test_the_task_id_does_not_change_prompts_or_sampling() -> None:
    it = interpreter(PLAN_EXECUTE)
    a = only(it.advance(it.start("a", pe_spec(seed=42), 42), 1))
    b = only(it.advance(it.start("another-task", pe_spec(seed=42), 42), 1))
    assert (a.prompt_token_ids, a.sampling) == (b.prompt_token_ids, b.sampling)
    assert a.action_id != b.action_id


@pytest.mark.parametrize(
    ("mode", "override", "expected"),
    [
        (Mode.SYNTHETIC, None, True),
        (Mode.LIVE, None, False),
        (Mode.SYNTHETIC, False, False),
        (Mode.LIVE, True, True),
    ],
)
def test_ignore_eos_follows_the_mode_unless_overridden(
    mode: Mode, override: bool | None, expected: bool
) -> None:
    sampling = first_sampling(PLAN_EXECUTE, pe_spec(mode=mode, ignore_eos=override))
    assert {s.ignore_eos for s in sampling.values()} == {expected}


def test_temperature_and_top_p_pass_through_unless_the_step_sets_its_own() -> None:
    prog = program(llm("free"), llm("cold", temperature=0.0), llm("answer"))
    sampling = first_sampling(prog, spec(temperature=0.3, top_p=0.9))
    assert (sampling["free"].temperature, sampling["free"].top_p) == (0.3, 0.9)
    assert (sampling["cold"].temperature, sampling["cold"].top_p) == (0.0, 0.9)


@pytest.mark.parametrize(
    ("fields", "planner", "worker", "synthesizer"),
    [
        ({}, 64, 48, 64),
        ({"step_max_tokens": (("planner", 10),)}, 10, 48, 64),
        ({"max_tokens": 50}, 50, 48, 50),
        ({"max_tokens": 20, "step_max_tokens": (("worker", 100),)}, 20, 20, 20),
        ({"max_tokens": 200, "step_max_tokens": (("worker", 100),)}, 64, 100, 64),
    ],
)
def test_step_max_tokens_overrides_and_max_tokens_caps(
    fields: dict[str, object], planner: int, worker: int, synthesizer: int
) -> None:
    sampling = first_sampling(PLAN_EXECUTE, pe_spec(**fields))
    got = [sampling[s].max_tokens for s in ("planner", "worker", "synthesizer")]
    assert got == [planner, worker, synthesizer]


def test_drawn_output_lengths_follow_the_distribution_and_the_seed() -> None:
    prog = program(
        llm("a", max_tokens=Uniform(10, 20)), llm("answer", max_tokens=Empirical((3.0, 9.0)))
    )
    drawn = [first_sampling(prog, spec(), seed) for seed in range(30)]
    assert drawn == [first_sampling(prog, spec(), seed) for seed in range(30)]
    assert {s["a"].max_tokens for s in drawn} <= set(range(10, 21))
    assert len({s["a"].max_tokens for s in drawn}) > 5
    assert {s["answer"].max_tokens for s in drawn} == {3, 9}


def test_max_context_is_the_longest_prompt_plus_its_output() -> None:
    it = interpreter(PLAN_EXECUTE)
    shape = dry_run(it, spec("plan_execute", "hello there"), 0)
    worker = node(PLAN_EXECUTE, "worker")
    expected = (
        len(head("hello there", PLAN_EXECUTE.system))
        + len(text_of(node(PLAN_EXECUTE, "planner")))
        + 64
        + sum(len(text_of(worker, branch=b, branches=3)) + 48 for b in (1, 2, 3))
        + len(text_of(node(PLAN_EXECUTE, "synthesizer")))
        + 64
    )
    assert shape.max_context == expected
    capped = dry_run(it, spec("plan_execute", "hello there", max_tokens=8), 0)
    assert capped.max_context == expected - 2 * (64 - 8) - 3 * (48 - 8)
    longer = dry_run(it, spec("plan_execute", "hello there" + "x" * 100), 0)
    assert longer.max_context == expected + 100


# ---- loops --------------------------------------------------------------------------


THREE = Constant(3.0)


def loop_program(
    iterations: Constant | Uniform = THREE,
    *,
    until: str | None = None,
    max_iterations: int = 5,
    body: tuple[Llm | Tool, ...] = (),
) -> Program:
    return program(
        Loop(
            "steps",
            body=body or (llm("think", "\n<think {iteration}>\n"),),
            iterations=iterations,
            until=until,
            max_iterations=max_iterations,
        ),
        llm("answer"),
    )


def test_synthetic_loop_runs_its_drawn_iterations_in_sequence() -> None:
    prog = loop_program(Constant(3.0))
    it = interpreter(prog)
    actions = run_to_end(it, start(it))
    thinks = [a for a in actions if a.step == "think"]
    assert len(thinks) == 3
    for i, a in enumerate(thinks):
        assert a.prompt_token_ids[-len(f"\n<think {i + 1}>\n") :] == encode(f"\n<think {i + 1}>\n")
    # Each iteration's prompt extends the previous one's prompt and output.
    for earlier, later in itertools.pairwise(thinks):
        assert later.prompt_token_ids[: len(earlier.prompt_token_ids)] == earlier.prompt_token_ids
        assert later.after == (earlier.action_id,)
    answer = actions[-1]
    assert answer.after == (thinks[-1].action_id,)


def test_synthetic_iterations_are_drawn_per_seed_and_bounded_by_max_iterations() -> None:
    prog = loop_program(Uniform(1.0, 5.0), max_iterations=5)
    counts = [dry_run(interpreter(prog), spec(), seed).llm_calls - 1 for seed in range(40)]
    assert set(counts) <= set(range(1, 6))
    assert len(set(counts)) >= 3
    assert counts == [dry_run(interpreter(prog), spec(), seed).llm_calls - 1 for seed in range(40)]


def test_synthetic_mode_ignores_until() -> None:
    prog = loop_program(Constant(2.0), until="DONE")
    it = interpreter(prog)
    actions = run_to_end(it, start(it), {"think": ["DONE", "DONE"]})
    assert [a.step for a in actions] == ["think", "think", "answer"]


def test_live_loop_stops_once_the_output_contains_until() -> None:
    prog = loop_program(Constant(1.0), until="DONE", max_iterations=6)
    it = interpreter(prog)
    actions = run_to_end(it, start(it, mode=Mode.LIVE), {"think": ["hmm", "hmm", "so: DONE."]})
    assert [a.step for a in actions] == ["think"] * 3 + ["answer"]


def test_live_loop_is_bounded_by_max_iterations() -> None:
    prog = loop_program(Constant(1.0), until="DONE", max_iterations=4)
    it = interpreter(prog)
    actions = run_to_end(it, start(it, mode=Mode.LIVE), {"think": ["never"] * 10})
    assert [a.step for a in actions] == ["think"] * 4 + ["answer"]


def test_live_loop_checks_the_last_output_of_each_iteration() -> None:
    body = (llm("draft"), llm("check"))
    prog = loop_program(Constant(1.0), until="DONE", max_iterations=5, body=body)
    it = interpreter(prog)
    outputs = {"draft": ["DONE"] * 5, "check": ["not yet", "DONE"]}
    actions = run_to_end(it, start(it, mode=Mode.LIVE), outputs)
    assert [a.step for a in actions] == ["draft", "check"] * 2 + ["answer"]


def test_live_loop_without_until_uses_the_drawn_count() -> None:
    prog = loop_program(Constant(2.0), max_iterations=5)
    it = interpreter(prog)
    actions = run_to_end(it, start(it, mode=Mode.LIVE))
    assert [a.step for a in actions] == ["think", "think", "answer"]


# ---- tools --------------------------------------------------------------------------


def tool_program(tool: Tool) -> Program:
    return program(llm("ask"), tool, llm("answer", "\n<answer>\n"))


def test_simulated_tool_draws_latency_and_result_size_from_the_seed() -> None:
    tool = Tool(
        "lookup",
        argument="q={input} after={output}",
        latency_s=Uniform(0.1, 0.2),
        result_tokens=Uniform(10.0, 20.0),
    )
    prog = tool_program(tool)
    drawn = set()
    for seed in range(20):
        it = interpreter(prog)
        task = start(it, seed=seed)
        ask = only(it.advance(task, 8))
        finish(it, task, ask, "the question")
        action = only(it.advance(task, 8))
        assert action.kind is ActionKind.TOOL
        assert (action.tool, action.step, action.after) == (None, "lookup", (ask.action_id,))
        assert action.argument == "q=hello after=the question"
        assert action.sampling is None and action.prompt_token_ids == ()
        assert 0.1 <= action.latency_s <= 0.2
        assert 10 <= action.result_tokens <= 20
        drawn.add((action.latency_s, action.result_tokens))
        again = interpreter(prog)
        task2 = start(again, seed=seed)
        finish(again, task2, only(again.advance(task2, 8)), "the question")
        twin = only(again.advance(task2, 8))
        assert (twin.latency_s, twin.result_tokens) == (action.latency_s, action.result_tokens)
    assert len(drawn) > 10


def test_tool_result_joins_the_context_after_an_observation_header() -> None:
    prog = tool_program(Tool("calc", tool="calculator", argument="{output}", time_limit_s=2.0))
    it = interpreter(prog)
    task = start(it, mode=Mode.LIVE)
    ask = only(it.advance(task, 8))
    finish(it, task, ask, "2 + 3 * 4")
    action = only(it.advance(task, 8))
    assert (action.kind, action.tool, action.argument) == (
        ActionKind.TOOL,
        "calculator",
        "2 + 3 * 4",
    )
    assert action.time_limit_s == 2.0
    it.complete(task, action.action_id, Outcome(encode("14"), "14"))
    answer = only(it.advance(task, 8))
    assert answer.after == (action.action_id,)
    tail = encode("\nObservation from calculator:\n") + encode("14") + encode("\n<answer>\n")
    assert answer.prompt_token_ids[-len(tail) :] == tail
    assert (task.llm_calls, task.tool_calls) == (1, 1)


def test_synthetic_mode_simulates_real_tools_with_drawn_sizes() -> None:
    tool = Tool("calc", tool="calculator", latency_s=Constant(0.5), result_tokens=Constant(9.0))
    it = interpreter(tool_program(tool))
    task = start(it)
    finish(it, task, only(it.advance(task, 8)), "1 + 1")
    action = only(it.advance(task, 8))
    assert action.kind is ActionKind.TOOL
    assert (action.tool, action.latency_s, action.result_tokens) == (None, 0.5, 9)


def test_output_after_a_tool_is_the_previous_llm_output() -> None:
    prog = program(llm("ask"), Tool("look"), llm("answer", "\n<answer {output}>\n"))
    it = interpreter(prog)
    actions = run_to_end(it, start(it, mode=Mode.LIVE), {"ask": ["question"], "look": ["found"]})
    tail = encode("\n<answer question>\n")
    assert actions[-1].prompt_token_ids[-len(tail) :] == tail


def test_live_react_loop_stops_when_the_thought_says_final_answer() -> None:
    it = interpreter(react())
    task = start(it, mode=Mode.LIVE)
    outputs = {"thought": ["FINAL ANSWER: 42"] * 6, "observation": ["search results"] * 6}
    actions = run_to_end(it, task, outputs)
    assert [a.step for a in actions] == ["thought", "observation", "answer"]


# ---- parallel joins -----------------------------------------------------------------


CONCAT = Join(JoinKind.CONCAT)


def par_program(join: Join = CONCAT, width: int = 3, body: tuple[Llm, ...] = ()) -> Program:
    return program(
        Parallel(
            "fan",
            body=body or (llm("a", "\n<a {branch}/{branches}>\n"),),
            branches=Constant(float(width)),
            join=join,
        ),
        llm("answer", "\n<answer {output}>\n"),
    )


def branch_adds(prog: Program, texts: list[str], step: str = "a") -> list[tuple[int, ...]]:
    n = len(texts)
    return [
        text_of(node(prog, step), branch=b + 1, branches=n) + encode(t) for b, t in enumerate(texts)
    ]


def run_branches(
    prog: Program, texts: list[str], **fields: object
) -> tuple[Interpreter, TaskProgress, list[Action]]:
    it = interpreter(prog)
    task = start(it, **fields)
    branches = it.advance(task, 32)
    assert [b.step for b in branches] == ["a"] * len(texts)
    for b, t in reversed(list(zip(branches, texts, strict=True))):
        finish(it, task, b, t)
    return it, task, branches


def test_concat_appends_every_branch_in_order() -> None:
    prog = par_program(Join(JoinKind.CONCAT))
    it, task, branches = run_branches(prog, ["x0", "x1", "x2"])
    answer = only(it.advance(task, 32))
    adds = branch_adds(prog, ["x0", "x1", "x2"])
    assert answer.prompt_token_ids == head("hello") + adds[0] + adds[1] + adds[2] + encode(
        "\n<answer x0\nx1\nx2>\n"
    )
    assert answer.after == tuple(b.action_id for b in branches)


def test_each_branch_runs_its_body_in_sequence_on_its_own_context() -> None:
    prog = par_program(width=2, body=(llm("a", "\n<a {branch}>\n"), llm("b", "\n<b {branch}>\n")))
    it = interpreter(prog)
    task = start(it)
    a0, a1 = it.advance(task, 32)
    finish(it, task, a1, "one")
    b1 = only(it.advance(task, 32))  # branch 1 moves on without waiting for branch 0
    assert (b1.step, b1.branch, b1.after) == ("b", 1, (a1.action_id,))
    assert b1.prompt_token_ids == head("hello") + encode("\n<a 2>\none\n<b 2>\n")
    finish(it, task, a0, "zero")
    b0 = only(it.advance(task, 32))
    assert b0.prompt_token_ids == head("hello") + encode("\n<a 1>\nzero\n<b 1>\n")


@pytest.mark.parametrize(
    ("texts", "chosen"),
    [
        (["X", "Y", "Y"], 1),
        (["Y", "X", "Y"], 0),
        (["X", " Y\n", "Y"], 1),  # compared without surrounding whitespace
        (["A", "B", "B", "A"], 0),  # a tie goes to the lowest index
        (["A", "B", "C"], 0),
        (["C", "B", "A", "A"], 2),
    ],
)
def test_vote_keeps_the_majority_branch(texts: list[str], chosen: int) -> None:
    prog = par_program(Join(JoinKind.VOTE), width=len(texts))
    it, task, branches = run_branches(prog, texts)
    answer = only(it.advance(task, 32))
    adds = branch_adds(prog, texts)
    rendered = encode(f"\n<answer {texts[chosen]}>\n")
    assert answer.prompt_token_ids == head("hello") + adds[chosen] + rendered
    assert answer.after == tuple(b.action_id for b in branches)


def best_program(width: int = 3) -> Program:
    judge = llm("judge", "\n<judge: pick one>\n")
    return par_program(Join(JoinKind.BEST, judge), width=width)


def test_an_evaluator_may_name_the_number_of_candidates() -> None:
    judge = llm("judge", "\n<judge: pick one of {branches}>\n")
    prog = par_program(Join(JoinKind.BEST, judge), width=3)
    it, task, _ = run_branches(prog, ["x0", "x1", "x2"])
    judge_action = only(it.advance(task, 32))
    tail = encode("\n<judge: pick one of 3>\n")
    assert judge_action.prompt_token_ids[-len(tail) :] == tail


def test_best_asks_an_evaluator_that_reads_every_branch() -> None:
    prog = best_program()
    texts = ["x0", "x1", "x2"]
    it, task, branches = run_branches(prog, texts)
    judge = only(it.advance(task, 32))
    assert judge.kind is ActionKind.LLM
    assert (judge.step, judge.answer) == ("judge", False)
    adds = branch_adds(prog, texts)
    assert judge.prompt_token_ids == (
        head("hello") + adds[0] + adds[1] + adds[2] + encode("\n<judge: pick one>\n")
    )
    assert judge.after == tuple(b.action_id for b in branches)
    assert it.advance(task, 32) == []  # the answer waits for the verdict


@pytest.mark.parametrize(
    ("verdict", "chosen"),
    [("Branch 2 is best", 1), ("3", 2), ("7 is out of range, so 1", 0), ("0 then 3 then 2", 2)],
)
def test_live_best_continues_with_the_branch_the_evaluator_names(verdict: str, chosen: int) -> None:
    prog = best_program()
    texts = ["x0", "x1", "x2"]
    it, task, _ = run_branches(prog, texts, mode=Mode.LIVE)
    judge = only(it.advance(task, 32))
    finish(it, task, judge, verdict)
    answer = only(it.advance(task, 32))
    rendered = encode(f"\n<answer {texts[chosen]}>\n")
    # The chosen branch continues; the evaluator's own words are not in the context.
    assert answer.prompt_token_ids == head("hello") + branch_adds(prog, texts)[chosen] + rendered
    assert answer.after == (judge.action_id,)


def best_choice(mode: Mode, verdict: str, seed: int) -> int:
    prog = best_program()
    texts = ["x0", "x1", "x2"]
    it, task, _ = run_branches(prog, texts, mode=mode, seed=seed)
    finish(it, task, only(it.advance(task, 32)), verdict)
    answer = only(it.advance(task, 32))
    return next(
        i for i, t in enumerate(texts) if contains(answer.prompt_token_ids, encode(f"<answer {t}>"))
    )


def test_best_without_a_usable_verdict_picks_by_the_seed() -> None:
    for mode, verdict in ((Mode.LIVE, "no idea"), (Mode.SYNTHETIC, "2")):
        picks = [best_choice(mode, verdict, seed) for seed in range(30)]
        assert picks == [best_choice(mode, verdict, seed) for seed in range(30)]
        assert set(picks) == {0, 1, 2}


# ---- nesting, graph and the answer --------------------------------------------------


def test_parallel_inside_a_loop() -> None:
    prog = program(
        Loop(
            "rounds",
            body=(
                Parallel(
                    "fan", body=(llm("w", "\n<w {branch} {iteration}>\n"),), branches=Constant(2.0)
                ),
                llm("r", "\n<r {iteration}>\n"),
            ),
            iterations=Constant(2.0),
            max_iterations=2,
        ),
        llm("answer"),
    )
    it = interpreter(prog)
    actions = run_to_end(it, start(it))
    assert [a.step for a in actions] == ["w", "w", "r", "w", "w", "r", "answer"]
    w1a, w1b, r1, w2a, w2b, r2, answer = actions
    assert (w1a.after, w1b.after) == ((), ())
    assert r1.after == (w1a.action_id, w1b.action_id)
    assert (w2a.after, w2b.after) == ((r1.action_id,), (r1.action_id,))
    assert r2.after == (w2a.action_id, w2b.action_id)
    assert answer.after == (r2.action_id,)
    assert w2b.prompt_token_ids[-len("\n<w 2 2>\n") :] == encode("\n<w 2 2>\n")
    # The second round's prompts start with everything the first round produced.
    assert w2a.prompt_token_ids[: len(r1.prompt_token_ids)] == r1.prompt_token_ids
    assert [a.branch for a in actions] == [0, 1, 0, 0, 1, 0, 0]


def test_parallel_inside_a_parallel_renders_the_inner_branch() -> None:
    inner = Parallel(
        "inner", body=(llm("leaf", "\n<leaf {branch}/{branches}>\n"),), branches=Constant(3.0)
    )
    prog = program(Parallel("outer", body=(inner,), branches=Constant(2.0)), llm("answer"))
    it = interpreter(prog)
    actions = run_to_end(it, start(it))
    leaves = [a for a in actions if a.step == "leaf"]
    assert len(leaves) == 6
    assert [a.branch for a in leaves] == [0, 1, 2, 0, 1, 2]
    assert [a.prompt_token_ids[-len("\n<leaf 1/3>\n") :] for a in leaves[:3]] == [
        encode(f"\n<leaf {b}/3>\n") for b in (1, 2, 3)
    ]
    assert actions[-1].after == tuple(a.action_id for a in leaves)


def test_loop_inside_a_parallel_keeps_the_branch_number() -> None:
    loop = Loop(
        "l",
        body=(llm("s", "\n<s {branch}.{iteration}>\n"),),
        iterations=Constant(2.0),
        max_iterations=2,
    )
    prog = program(Parallel("p", body=(loop,), branches=Constant(2.0)), llm("answer"))
    it = interpreter(prog)
    actions = run_to_end(it, start(it))
    tails = sorted(a.prompt_token_ids[-len("\n<s 1.1>\n") :] for a in actions if a.step == "s")
    assert tails == sorted(encode(f"\n<s {b}.{i}>\n") for b in (1, 2) for i in (1, 2))


def test_evaluator_inside_a_loop_sees_the_iteration() -> None:
    judge = llm("judge", "\n<judge round {iteration}>\n")
    par = Parallel("p", body=(llm("a"),), branches=Constant(2.0), join=Join(JoinKind.BEST, judge))
    prog = program(
        Loop("rounds", body=(par,), iterations=Constant(2.0), max_iterations=2), llm("answer")
    )
    it = interpreter(prog)
    judges = [a for a in run_to_end(it, start(it)) if a.step == "judge"]
    assert [a.prompt_token_ids[-len("\n<judge round 1>\n") :] for a in judges] == [
        encode("\n<judge round 1>\n"),
        encode("\n<judge round 2>\n"),
    ]


def test_only_the_last_top_level_llm_is_the_answer() -> None:
    prog = program(
        Loop("l", body=(llm("inner"),), iterations=Constant(2.0), max_iterations=2),
        Parallel("p", body=(llm("w"),), branches=Constant(2.0)),
        llm("penultimate"),
        llm("final"),
    )
    it = interpreter(prog)
    task = start(it)
    actions = run_to_end(it, task, {"final": ["the answer"]})
    assert [a.step for a in actions if a.answer] == ["final"]
    assert actions[-1].step == "final"
    assert task.answer_id == actions[-1].action_id
    assert task.answer_text == "the answer"


# ---- properties over random programs ------------------------------------------------


def drive(
    it: Interpreter, task_spec: TaskSpec, seed: int, order: random.Random, budget: int
) -> tuple[list[Action], TaskProgress]:
    """Run a synthetic task with instant outcomes (like dry_run), completing the running
    actions in a random order, at most `budget` at a time; checks graph invariants."""
    task = it.start("t", task_spec, seed)
    issued: list[Action] = []
    pending: list[Action] = []
    completed: set[str] = set()
    for _ in range(100_000):
        new = it.advance(task, budget - task.running)
        for action in new:
            assert action.action_id not in {a.action_id for a in issued}
            # The executed graph's edges point at actions that already finished.
            assert set(action.after) <= completed, (action, completed)
        issued += new
        pending += new
        assert task.running == len(pending) <= budget
        if task.done:
            assert not pending
            return issued, task
        assert pending, "no progress"
        action = pending.pop(order.randrange(len(pending)))
        n = action.sampling.max_tokens if action.sampling is not None else action.result_tokens
        it.complete(task, action.action_id, Outcome((5,) * n, ""))
        completed.add(action.action_id)
    raise AssertionError("the task did not terminate")


def summary(actions: list[Action]) -> list[tuple[object, ...]]:
    """The order-free content of a run: every action without its id."""
    return sorted(
        (
            a.step,
            a.kind.value,
            a.branch,
            a.prompt_token_ids,
            str(a.sampling),
            a.answer,
            a.argument,
            a.result_tokens,
            a.latency_s,
        )
        for a in actions
    )


@settings(max_examples=120, deadline=None)
@given(
    prog=programs(),
    seed=st.integers(0, 2**32),
    order=st.randoms(use_true_random=False),
    budget=st.integers(1, 4),
)
def test_random_programs_run_to_a_consistent_end(
    prog: Program, seed: int, order: random.Random, budget: int
) -> None:
    it = interpreter(prog)
    task_spec = spec(prog.name, "hi")
    shape = dry_run(it, task_spec, seed)
    assert shape == dry_run(interpreter(prog), task_spec, seed)  # same seed, same shape
    actions, task = drive(it, task_spec, seed, order, budget)
    llm_actions = [a for a in actions if a.kind is ActionKind.LLM]
    tool_actions = [a for a in actions if a.kind is ActionKind.TOOL]
    assert shape.llm_calls == task.llm_calls == len(llm_actions)
    assert shape.tool_calls == task.tool_calls == len(tool_actions)
    low, high = call_bounds(prog.body)
    assert low <= shape.llm_calls <= high
    # The completion order and the budget change nothing but ids.
    baseline, _ = drive(interpreter(prog), task_spec, seed, random.Random(0), 1 << 20)
    assert summary(actions) == summary(baseline)
    assert shape.prompt_tokens == sum(len(a.prompt_token_ids) for a in llm_actions)
    assert shape.output_tokens == sum(a.sampling.max_tokens for a in llm_actions if a.sampling)
    assert shape.max_context == max(
        len(a.prompt_token_ids) + a.sampling.max_tokens for a in llm_actions if a.sampling
    )
    # The answer is the last top-level Llm, issued last, and depends on every action.
    [answer] = [a for a in actions if a.answer]
    assert answer is actions[-1]
    assert answer.step == prog.body[-1].name
    parents = {a.action_id: a.after for a in actions}
    seen: set[str] = set()
    stack = [answer.action_id]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(parents[current])
    assert seen == set(parents)


def shape_of(prog: Program, seed: int) -> TaskShape:
    return dry_run(interpreter(prog), spec(prog.name, "hi"), seed)


def test_different_seeds_give_different_shapes_for_random_distributions() -> None:
    prog = program(
        Parallel(
            "fan",
            body=(llm("w", max_tokens=Uniform(4, 40)),),
            branches=Uniform(1, 4),
            max_branches=4,
        ),
        Loop("l", body=(llm("s"),), iterations=Uniform(1, 3), max_iterations=3),
        Tool("t", result_tokens=Uniform(1, 50)),
        llm("answer", max_tokens=Uniform(1, 30)),
    )
    shapes = {shape_of(prog, seed) for seed in range(20)}
    assert len(shapes) >= 15
    assert len({s.llm_calls for s in shapes}) > 1
    fixed = program(llm("a"), llm("answer"))
    assert len({shape_of(fixed, seed) for seed in range(5)}) == 1
