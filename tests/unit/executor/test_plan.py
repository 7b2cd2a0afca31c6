"""The pure planner: which calls run next, with which prompts and sampling."""

from __future__ import annotations

import pytest

from agents import plan_execute
from orchestrator.domain import Mode, TaskSpec
from orchestrator.executor.plan import (
    PlannedCall,
    TaskState,
    branch_count,
    call_sampling,
    max_context_tokens,
    next_calls,
)

from ..factories import encode, finish, llm_step, program, task_state

PLAN = "1. look\n2. think\n3. write\n"


def start_all(state: TaskState, max_running: int = 32) -> list[PlannedCall]:
    calls = next_calls(state, max_running)
    for call in calls:
        state.start(call)
    return calls


def instruction(state: TaskState, step: str, branch: int, width: int) -> tuple[int, ...]:
    return state.encoded.instructions[(step, branch, width)]


def run_planner(state: TaskState, text: str = PLAN) -> PlannedCall:
    [planner] = start_all(state)
    finish(state, planner, text)
    return planner


def test_planner_runs_first_and_alone() -> None:
    state = task_state(plan_execute(3), user_input="what is up")
    [planner] = next_calls(state, 32)
    assert planner.step == "planner"
    assert planner.after == ()
    assert not planner.answer
    assert planner.prompt_token_ids == state.prefix + instruction(state, "planner", 0, 1)
    assert state.prefix[-len("what is up") :] == encode("what is up")
    state.start(planner)
    assert next_calls(state, 32) == []  # nothing else may start while the plan is pending
    assert not state.done()


def test_workers_share_the_planner_context_as_prefix() -> None:
    state = task_state(plan_execute(3))
    planner = run_planner(state)
    workers = next_calls(state, 32)
    assert [(w.step, w.branch) for w in workers] == [("worker", 0), ("worker", 1), ("worker", 2)]
    shared = state.prefix + instruction(state, "planner", 0, 1) + encode(PLAN)
    for worker in workers:
        assert worker.prompt_token_ids[: len(shared)] == shared
        assert worker.prompt_token_ids[len(shared) :] == instruction(
            state, "worker", worker.branch, 3
        )
        assert worker.after == (planner.call_id,)
    # Each worker is told which plan step it carries out.
    assert encode("step 2 of the plan") in _windows(workers[1].prompt_token_ids, 18)
    assert len({w.call_id for w in workers}) == 3


def _windows(ids: tuple[int, ...], size: int) -> set[tuple[int, ...]]:
    return {ids[i : i + size] for i in range(len(ids) - size + 1)}


def test_synthesizer_waits_for_every_worker_then_sees_all_sections_in_branch_order() -> None:
    state = task_state(plan_execute(3))
    planner = run_planner(state)
    workers = start_all(state)
    # Finish out of order: the prompt must still list branches 0, 1, 2.
    finish(state, workers[2], "result two")
    finish(state, workers[0], "result zero")
    assert next_calls(state, 32) == []
    finish(state, workers[1], "result one")
    [synth] = next_calls(state, 32)
    assert synth.step == "synthesizer"
    assert synth.answer
    expected = (
        state.prefix
        + instruction(state, "planner", 0, 1)
        + encode(PLAN)
        + instruction(state, "worker", 0, 3)
        + encode("result zero")
        + instruction(state, "worker", 1, 3)
        + encode("result one")
        + instruction(state, "worker", 2, 3)
        + encode("result two")
        + instruction(state, "synthesizer", 0, 1)
    )
    assert synth.prompt_token_ids == expected
    assert synth.after == (planner.call_id, *(w.call_id for w in workers))


def test_task_is_done_only_when_the_answer_call_finished() -> None:
    state = task_state(plan_execute(2))
    run_planner(state)
    for worker in start_all(state):
        finish(state, worker, "ok")
    assert not state.done()
    [synth] = start_all(state)
    assert state.answer_call_id == synth.call_id
    assert not state.done()
    finish(state, synth, "final answer")
    assert state.done()
    assert next_calls(state, 32) == []
    assert state.answer_text() == "final answer"
    record = state.answer_record()
    assert record is not None and record.call_id == synth.call_id
    assert len(state.records()) == 4


def test_bound_on_calls_in_flight_is_honoured() -> None:
    state = task_state(plan_execute(5))
    run_planner(state)
    first = start_all(state, max_running=2)
    assert [c.branch for c in first] == [0, 1]
    assert next_calls(state, 2) == []
    assert next_calls(state, 0) == []
    assert [c.branch for c in next_calls(state, 4)] == [2, 3]


def test_fanout_wider_than_the_bound_completes() -> None:
    state = task_state(plan_execute(3))
    run_planner(state)
    workers = start_all(state, max_running=2)
    finish(state, workers[0], "zero")  # KeyError: ('worker', 0, 2)
    finish(state, workers[1], "one")
    [last] = start_all(state, max_running=2)
    finish(state, last, "two")
    [synth] = next_calls(state, 2)
    assert synth.prompt_token_ids[-len(instruction(state, "synthesizer", 0, 1)) :] == (
        instruction(state, "synthesizer", 0, 1)
    )


def test_live_mode_fans_out_one_branch_per_non_empty_plan_line() -> None:
    state = task_state(plan_execute(3), mode=Mode.LIVE)
    run_planner(state, "first\n\n   \nsecond\nthird\nfourth\n")
    workers = next_calls(state, 32)
    assert [w.branch for w in workers] == [0, 1, 2, 3]
    width_4 = instruction(state, "worker", 3, 4)
    assert workers[3].prompt_token_ids[-len(width_4) :] == width_4


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
def test_live_fanout_is_clipped_to_one_through_fanout_max(plan: str, width: int) -> None:
    state = task_state(plan_execute(3), mode=Mode.LIVE)
    run_planner(state, plan)
    assert branch_count(state, state.program.step("worker")) == width
    assert len(next_calls(state, 32)) == width


def test_synthetic_mode_uses_the_fixed_fanout_whatever_the_plan_says() -> None:
    state = task_state(plan_execute(3), mode=Mode.SYNTHETIC)
    run_planner(state, "\n".join(f"step {i}" for i in range(6)))
    assert len(next_calls(state, 32)) == 3
    state = task_state(plan_execute(3), mode=Mode.SYNTHETIC)
    run_planner(state, "")
    assert len(next_calls(state, 32)) == 3


def test_live_run_completes_with_every_branch_in_the_answer_prompt() -> None:
    state = task_state(plan_execute(3), mode=Mode.LIVE)
    run_planner(state, "a\nb\nc\nd\ne\n")
    workers = start_all(state)
    for worker in reversed(workers):
        finish(state, worker, f"done {worker.branch}")
    [synth] = start_all(state)
    for branch in range(5):
        section = instruction(state, "worker", branch, 5) + encode(f"done {branch}")
        assert section in _windows(synth.prompt_token_ids, len(section))
    finish(state, synth, "answer")
    assert state.done()


def spec(**fields: object) -> TaskSpec:
    return TaskSpec(agent="plan_execute", input="x", **fields)  # type: ignore[arg-type]


def test_same_seed_gives_the_same_call_seeds() -> None:
    step = plan_execute().step("worker")
    assert call_sampling(spec(seed=7), step, 1) == call_sampling(spec(seed=7), step, 1)
    assert call_sampling(spec(seed=7), step, 1).seed is not None


def test_call_seeds_differ_across_steps_branches_and_task_seeds() -> None:
    prog = plan_execute(8)
    seeds = {
        call_sampling(spec(seed=7), prog.step(name), branch).seed
        for name, width in (("planner", 1), ("worker", 8), ("synthesizer", 1))
        for branch in range(width)
    }
    assert len(seeds) == 10
    worker = prog.step("worker")
    seed_7, seed_8 = (call_sampling(spec(seed=s), worker, 0).seed for s in (7, 8))
    assert seed_7 != seed_8


def test_no_task_seed_means_unseeded_calls() -> None:
    assert call_sampling(spec(), plan_execute().step("planner"), 0).seed is None


def test_seeds_reach_planned_calls() -> None:
    a = task_state(plan_execute(), seed=42)
    b = task_state(plan_execute(), seed=42, task_id="another-task")
    assert next_calls(a, 1)[0].sampling == next_calls(b, 1)[0].sampling


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
    sampling = call_sampling(spec(mode=mode, ignore_eos=override), plan_execute().steps[0], 0)
    assert sampling.ignore_eos is expected


def test_temperature_and_top_p_pass_through() -> None:
    sampling = call_sampling(spec(temperature=0.3, top_p=0.9), plan_execute().steps[0], 0)
    assert (sampling.temperature, sampling.top_p) == (0.3, 0.9)


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
    prog = plan_execute()
    got = [call_sampling(spec(**fields), s, 0).max_tokens for s in prog.steps]
    assert got == [planner, worker, synthesizer]


def _instruction_len(state: TaskState, step: str, width: int) -> int:
    return max(len(instruction(state, step, b, width)) for b in range(width))


def test_max_context_tokens_counts_every_ancestor_section_of_the_longest_prompt() -> None:
    state = task_state(plan_execute(3), user_input="hello there")
    expected = (
        len(state.prefix)
        + _instruction_len(state, "planner", 1)
        + 64
        + 3 * (_instruction_len(state, "worker", 3) + 48)
        + _instruction_len(state, "synthesizer", 1)
        + 64
    )
    assert max_context_tokens(state) == expected


def test_max_context_tokens_uses_fanout_max_in_live_mode_and_the_task_caps() -> None:
    synthetic = max_context_tokens(task_state(plan_execute(3)))
    live = max_context_tokens(task_state(plan_execute(3), mode=Mode.LIVE))
    capped = max_context_tokens(task_state(plan_execute(3), max_tokens=8))
    assert live > synthetic > capped
    longer_input = max_context_tokens(task_state(plan_execute(3), user_input="x" * 100))
    assert longer_input == synthetic + 100 - len("hello")


@pytest.mark.parametrize("mode", [Mode.SYNTHETIC, Mode.LIVE])
def test_max_context_tokens_bounds_every_call_of_a_run(mode: Mode) -> None:
    # Instructions that mention the width get longer as the fan-out widens.
    prog = program(
        llm_step("plan", max_tokens=30),
        llm_step(
            "work",
            "plan",
            instruction="\npart {branch} of {branches}\n",
            max_tokens=12,
            fanout=2,
            fanout_from="plan",
            fanout_max=10,
        ),
        llm_step("merge", "work", max_tokens=16),
        llm_step("answer", "plan", "merge", max_tokens=20, answer=True),
    )
    state = task_state(prog, mode=mode)
    bound = max_context_tokens(state)
    peak = 0
    while not state.done():
        calls = start_all(state)
        for call in calls:
            peak = max(peak, len(call.prompt_token_ids) + call.sampling.max_tokens)
            # Outputs as long as allowed; the plan asks for as many branches as it can.
            text = "\n".join("p" * 2 for _ in range(10)) if call.step == "plan" else ""
            limit = call.sampling.max_tokens
            finish(state, call, (text or "o" * limit)[:limit])
    assert peak <= bound
    assert len(state.instances["work"]) == (10 if mode is Mode.LIVE else 2)


def test_every_step_runs_even_when_the_bound_defers_it() -> None:
    # "side" does not feed the answer, but the program lists it, and expected_llm_calls
    # counts it: a task must issue it whatever the bound on calls in flight.
    prog = program(llm_step("a"), llm_step("answer", "a", answer=True), llm_step("side", "a"))
    state = task_state(prog)
    while not state.done():
        for call in start_all(state, max_running=1):
            finish(state, call, "out")
    assert len(state.records()) == prog.expected_llm_calls() == 3
