"""The pure task driver (`orchestrator.executor.driver`): the commands it returns for
each outcome, on a clock the test moves by hand. No asyncio, no replica: the calls'
results are made up here, and the router is the real one."""

from __future__ import annotations

from agents.distributions import Constant
from agents.dsl import Parallel, Tool
from orchestrator.config import RouterSettings, RoutingPolicy
from orchestrator.domain import (
    CallResult,
    CallUsage,
    ErrorCode,
    FinishReason,
    StepFinished,
    StepStarted,
)
from orchestrator.executor.driver import (
    Cancel,
    Command,
    Dispatch,
    DriverLimits,
    Emit,
    Finish,
    RunTool,
    TaskDriver,
)
from orchestrator.executor.interpreter import Outcome
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import ReplicaView, Router

from ..factories import interpreter, llm, program, start, timings

FAN_OUT = program(
    llm("planner"),
    Parallel("workers", (llm("worker"),), branches=Constant(4.0)),
    llm("answer"),
)


def views(n: int = 3) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", True, 0) for i in range(n)]


def make(
    prog: object = FAN_OUT, *, limits: DriverLimits | None = None, **task: object
) -> TaskDriver:
    it = interpreter(prog)  # type: ignore[arg-type]
    router = Router(RouterSettings(policy=RoutingPolicy.LEAST_LOAD))
    return TaskDriver(
        it, start(it, **task), router, views, accepted_at=100.0, limits=limits or DriverLimits()
    )


def result(dispatch: Dispatch) -> CallResult:
    n = dispatch.request.sampling.max_tokens
    ids = tuple(range(7, 7 + n))
    return CallResult(
        dispatch.action.action_id,
        ids,
        "x" * n,
        FinishReason.LENGTH,
        CallUsage(len(dispatch.request.prompt_token_ids), 0, n),
        timings(e2e=0.1, output_tokens=n),
    )


def of(commands: list[Command], kind: type) -> list:  # type: ignore[type-arg]
    return [c for c in commands if isinstance(c, kind)]


def test_a_fan_out_runs_step_by_step_and_finishes_with_folded_usage() -> None:
    driver = make()
    first = driver.start(now=100.0)
    [planner] = of(first, Dispatch)
    assert [e.event.step for e in of(first, Emit)] == ["planner"]
    assert isinstance(of(first, Emit)[0].event, StepStarted)
    after_plan = driver.call_done(planner.action.action_id, result(planner), now=100.5)
    finished = of(after_plan, Emit)[0].event
    assert isinstance(finished, StepFinished) and finished.call is not None
    assert finished.call.dispatch_to_result == 0.5  # from the driver's own clock
    workers = of(after_plan, Dispatch)
    assert [w.action.step for w in workers] == ["worker"] * 4
    assert all(w.request.task_id == driver.task.task_id for w in workers)
    commands: list[Command] = []
    for worker in workers:
        commands = driver.call_done(worker.action.action_id, result(worker), now=101.0)
    [answer] = of(commands, Dispatch)
    assert answer.action.answer
    end = driver.call_done(answer.action.action_id, result(answer), now=102.0)
    [finish] = of(end, Finish)
    assert finish.failure is None and finish.result is not None and driver.ended
    usage = finish.result.usage
    assert usage.llm_calls == 6 and usage.task_latency == 2.0
    # The answer's first token: its dispatch (101.0) plus the engine's TTFT.
    assert abs(usage.task_ttft - (1.0 + answer_ttft(answer))) < 1e-9
    assert usage.output_tokens_total == sum(
        d.request.sampling.max_tokens for d in [planner, *workers, answer]
    )


def answer_ttft(dispatch: Dispatch) -> float:
    return result(dispatch).timings.ttft


def test_the_call_budget_holds_back_a_wide_fan_out() -> None:
    driver = make(limits=DriverLimits(max_concurrent_calls=2))
    [planner] = of(driver.start(now=0.0), Dispatch)
    workers = of(driver.call_done(planner.action.action_id, result(planner), now=1.0), Dispatch)
    assert len(workers) == 2  # two of four; the others wait for a slot
    more = of(driver.call_done(workers[0].action.action_id, result(workers[0]), now=2.0), Dispatch)
    assert len(more) == 1


def test_a_replica_failure_is_retried_elsewhere_then_fails_the_task_and_cancels_the_rest() -> None:
    driver = make(limits=DriverLimits(max_retries=1))
    [planner] = of(driver.start(now=0.0), Dispatch)
    workers = of(driver.call_done(planner.action.action_id, result(planner), now=1.0), Dispatch)
    victim = workers[0]
    down = EngineError(ErrorCode.UNAVAILABLE, "replica died")
    [retry] = driver.call_failed(victim.action.action_id, down, now=1.5)
    assert isinstance(retry, Dispatch) and retry.attempt == 1
    assert retry.replica != victim.replica and retry.request.prompt_token_ids == (
        victim.request.prompt_token_ids
    )
    # The second failure is one past max_retries: the task fails.
    end = driver.call_failed(victim.action.action_id, down, now=2.0)
    [cancel] = of(end, Cancel)
    assert set(cancel.action_ids) == {w.action.action_id for w in workers[1:]}
    [finish] = of(end, Finish)
    assert finish.failure is not None and finish.failure.code is ErrorCode.UNAVAILABLE
    assert "replica died" in finish.failure.message
    usage = finish.failure.usage
    assert usage is not None and usage.llm_calls == 1 + 3  # planner + the aborted three
    # Reports of calls the task no longer tracks change nothing.
    assert driver.call_done(workers[1].action.action_id, result(workers[1]), now=3.0) == []


def test_an_engine_refusal_is_not_retried() -> None:
    driver = make()
    [planner] = of(driver.start(now=0.0), Dispatch)
    refused = EngineError(ErrorCode.INVALID_ARGUMENT, "prompt too long")
    [finish] = driver.call_failed(planner.action.action_id, refused, now=0.1)
    assert isinstance(finish, Finish) and finish.failure is not None
    assert finish.failure.code is ErrorCode.INVALID_ARGUMENT


def test_the_deadline_fails_the_task_with_partial_usage_and_requests_carry_what_is_left() -> None:
    driver = make(deadline_s=10.0)
    assert driver.deadline == 110.0
    [planner] = of(driver.start(now=104.0), Dispatch)
    assert planner.request.deadline_s == 6.0  # what is left at dispatch
    driver.answer_streamed(planner.action.action_id, 3, now=105.0)  # counted if aborted
    end = driver.expire(now=110.0)
    assert of(end, Cancel)[0].action_ids == (planner.action.action_id,)
    [finish] = of(end, Finish)
    assert finish.failure is not None and finish.failure.code is ErrorCode.DEADLINE_EXCEEDED
    usage = finish.failure.usage
    assert usage is not None and usage.output_tokens_total == 3 and usage.task_latency == 10.0
    assert driver.expire(now=111.0) == []


def test_tools_run_and_their_records_time_on_the_drivers_clock() -> None:
    prog = program(
        Tool("lookup", argument="q", latency_s=Constant(0.2), result_tokens=Constant(5.0)),
        llm("answer"),
    )
    driver = make(prog)
    [run] = of(driver.start(now=0.0), RunTool)
    commands = driver.tool_done(run.action.action_id, Outcome((5,) * 5, "r"), True, now=0.25)
    finished = of(commands, Emit)[0].event
    assert isinstance(finished, StepFinished) and finished.tool is not None
    assert finished.tool.elapsed == 0.25 and finished.tool.result_tokens == 5
    assert [d.action.step for d in of(commands, Dispatch)] == ["answer"]


def test_abandon_cancels_what_runs_and_ends_the_task_without_a_result() -> None:
    driver = make()
    [planner] = of(driver.start(now=0.0), Dispatch)
    assert driver.abandon() == [Cancel((planner.action.action_id,))]
    assert driver.ended and driver.abandon() == []
