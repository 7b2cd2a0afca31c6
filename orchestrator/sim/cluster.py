"""Fast-forward cluster simulation: tasks, the router and many simulated replicas on one
virtual clock, in one process.

The same code as the live orchestrator decides everything: one `TaskDriver` per task
(orchestrator/executor/driver.py: its calls, budget, priority, retries, records and
usage), the agent-program `Interpreter` that builds the prompts, the `Router`, the
`AdmissionQueue`, and on every replica the `Scheduler` + `PerfModel` the sim engine
runs. This module is only the driver's second shell: where the live executor awaits
asyncio tasks and Ray calls, a discrete-event loop jumps from one event (a task
arriving, an engine step ending, a simulated tool returning) to the next, so hours of
traffic on a large cluster take seconds.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agents.dsl import Program
from agents.library import BUILTIN_PROGRAMS
from orchestrator.blocks import BLOCK_TOKENS
from orchestrator.config import ConfigError, engine_for_routing
from orchestrator.domain import (
    CallResult,
    CallTimings,
    CallUsage,
    ErrorCode,
    FinishReason,
    Mode,
    TaskResult,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.admission import AdmissionQueue, ClusterLoad, Verdict, cluster_load
from orchestrator.executor.driver import (
    Cancel,
    Command,
    Dispatch,
    DriverLimits,
    Finish,
    RunTool,
    TaskDriver,
    filler_tokens,
    simulated_tool_outcome,
)
from orchestrator.executor.interpreter import Action, Encoder, Interpreter
from orchestrator.replicas.engine import EngineError
from orchestrator.report import RunSummary, summarize
from orchestrator.routing import ReplicaView, Router, make_router
from orchestrator.sim.build import build_replica
from orchestrator.sim.catalog import load_catalog
from orchestrator.sim.config import SimulationConfig
from orchestrator.sim.scheduler import Scheduler, SimRequest, StepResult
from orchestrator.sim.timeline import AgentBreakdown, Percentiles, Sample, Timeline
from orchestrator.sim.tokens import SimTokenizer, output_token_ids
from orchestrator.workload.arrivals import Arrival, ArrivalProcess, arrivals
from orchestrator.workload.mix import WORDS
from orchestrator.workload.slo import SloCheck, slo_checks
from orchestrator.workload.traces import TraceError

# ---- the simulation --------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Task:
    driver: TaskDriver
    measured: bool
    calls: dict[str, _Call] = field(default_factory=dict)  # dispatched, not ended
    tools: set[str] = field(default_factory=set)  # tool steps running
    admitted_at: float = 0.0  # when admission let it start (virtual time)


@dataclass(slots=True, eq=False)
class _Call:
    task: _Task
    action_id: str
    replica: int
    request: SimRequest
    cancelled: bool = False  # its task ended; the engine dropped it


class _Replica:
    def __init__(self, name: str, scheduler: Scheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.busy = False  # a step is in progress (its end event is queued)
        self.in_flight = 0
        self.output_tokens = 0

    def view(self) -> ReplicaView:
        scheduler = self.scheduler
        kv = scheduler.kv
        return ReplicaView(
            self.name,
            True,
            self.in_flight,
            waiting_requests=scheduler.num_waiting,
            running_requests=len(scheduler.running),
            kv_usage=kv.usage,
            prefix_hit_rate=kv.hits / kv.queries if kv.queries else 0.0,
            kv_block_tokens=BLOCK_TOKENS,
            kv_capacity_blocks=kv.num_blocks,
            evicted_blocks=kv.evictions,
        )


@dataclass(slots=True, frozen=True)
class SimulationResult:
    summary: RunSummary
    timeline: Timeline
    results: tuple[TaskResult, ...]
    failed: int  # tasks that failed, refused ones included
    simulated_s: float  # virtual time at the end (arrivals + drain)
    events: int
    calls: int
    slo_met: bool | None  # None: no SLO given
    goodput_tasks_per_s: float  # measured tasks meeting every per-task SLO bound, per s
    replica_names: tuple[str, ...]
    gpu_utilization: float  # mean fraction of time the replicas' GPUs were busy
    warmup_s: float = 0.0  # arrivals before this were not measured
    slo_checks: tuple[SloCheck, ...] = ()  # one per bound given, in SloConfig order
    agents: tuple[AgentBreakdown, ...] = ()  # per agent program, in the mix's order
    interrupted: bool = False  # cut short (Ctrl-C): the figures cover what ran
    refused: int = 0  # tasks admission refused (its queue was full)


class _Kind(enum.IntEnum):
    # Ties at the same instant: finish steps before starting new work.
    STEP_END = 0
    TOOL_DONE = 1
    CALL_ARRIVES = 2
    TASK_ARRIVES = 3
    SAMPLE = 4


class ClusterSimulation:
    """One fast-forward run. `run()` returns the summary, timeline and task results."""

    def __init__(
        self,
        config: SimulationConfig,
        *,
        programs: Mapping[str, Program] | None = None,
        router: Router | None = None,
        tasks: Sequence[tuple[float, TaskSpec]] | None = None,
    ) -> None:
        """`tasks`: run exactly these (arrival time, spec; its seed fixes its shape)
        instead of drawing arrivals and tasks from the workload."""
        self.config = config
        self._given = tasks
        catalog = load_catalog(config.engine.catalogs)
        model = catalog.model(config.engine.model)
        self._tokenizer = SimTokenizer(model.vocab)
        self._vocab = model.vocab
        encoder = Encoder(self._tokenizer.encode, self._tokenizer.bos_token_id)
        programs = dict(programs if programs is not None else BUILTIN_PROGRAMS)
        unknown = sorted(set(config.workload.mix) - set(programs))
        if unknown:
            raise ConfigError(
                f"workload.mix: unknown agent(s) {unknown}; known: {', '.join(sorted(programs))}"
            )
        # Every program can run (a trace may name agents outside the mix).
        self._interpreters = {
            name: Interpreter(program, encoder) for name, program in programs.items()
        }
        unknown = sorted({spec.agent for _, spec in tasks or ()} - set(self._interpreters))
        if unknown:
            raise ConfigError(f"tasks: unknown agent(s) {unknown}")
        self._mix_names = list(config.workload.mix)
        weights = np.array([config.workload.mix[n] for n in self._mix_names], dtype=float)
        if weights.sum() <= 0:
            raise ConfigError("workload.mix: weights must add up to more than 0")
        self._mix_p = weights / weights.sum()
        engine = engine_for_routing(config.routing, config.engine)
        self._replicas = [
            _Replica(f"sim-{i}", build_replica(engine, catalog)) for i in range(config.replicas)
        ]
        for replica in self._replicas:
            # Inter-token gaps are not reported here: keeping every token's time would
            # cost more than the rest of the step.
            replica.scheduler.config = replace(replica.scheduler.config, record_token_times=False)
        self._by_name = {r.name: i for i, r in enumerate(self._replicas)}
        self._router: Router = router or make_router(config.routing.router_settings())
        # The deployed orchestrator's per-task limits and admission control.
        self._priority = config.routing.priority_settings()
        self._limits = DriverLimits(
            config.limits.max_concurrent_calls_per_task, config.limits.max_retries
        )
        self._admission: AdmissionQueue[_Task] = AdmissionQueue(config.admission, self._load)
        self._refused = 0
        self._filler = filler_tokens(encoder)
        pool_size = 1 << 20
        self._pool = output_token_ids(config.engine.seed, "pool", pool_size, model.vocab)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.events = 0
        # What run() accumulates; set here so that result_so_far() works at any moment.
        self._now = 0.0
        self._live = 0
        self._results: list[TaskResult] = []
        self._measured: list[TaskResult] = []
        self._failures: list[TaskUsage | None] = []  # per failed task; None: not measured
        self._calls = 0
        self._window: list[TaskResult] = []
        self._window_output = 0
        self._window_prompt = 0
        self._samples: list[Sample] = []
        self._last_completion = 0.0
        self._trace: list[Arrival] | None = None
        if config.arrival.process is ArrivalProcess.TRACE:
            # Read the whole trace first, so a bad entry fails before any simulation.
            self._trace = list(arrivals(config.arrival, config.duration_s, config.seed))
            unknown = sorted({a.agent for a in self._trace if a.agent} - set(self._interpreters))
            if unknown:
                known = ", ".join(sorted(self._interpreters))
                raise TraceError(
                    f"{config.arrival.trace}: unknown agent(s) {unknown}; known: {known}"
                )

    @property
    def tokenizer(self) -> SimTokenizer:
        """The simulated model's tokenizer (prompts are built with it)."""
        return self._tokenizer

    def call_output(self, seed: int | None, n: int) -> tuple[int, ...]:
        """A call's output tokens: a seeded slice of one shared random pool. Only their
        identity matters here (prefix-cache hashes); drawing a fresh generator per call,
        as the live engine does, would cost more than simulating the call."""
        pool = self._pool
        start = (seed if seed is not None else next(self._seq)) % (len(pool) - n)
        return tuple(pool[start : start + n])

    # ---- event plumbing -----------------------------------------------------------------

    def _at(self, t: float, kind: _Kind, payload: Any) -> None:
        heapq.heappush(self._heap, (t, kind, next(self._seq), payload))

    def _input_text(self, rng: np.random.Generator, tokens: int) -> str:
        """Input of `tokens` tokens: words the sim tokenizer encodes as one token each."""
        words = rng.integers(0, len(WORDS), tokens)
        return "".join(WORDS[w] for w in words.tolist())

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        config = self.config
        rng = np.random.default_rng(config.seed)
        wl = config.workload
        median = wl.input_tokens_mean / math.exp(wl.input_tokens_sigma**2 / 2.0)
        arrival_iter = (
            iter(self._trace)
            if self._trace is not None
            else arrivals(config.arrival, config.duration_s, config.seed)
        )
        started = 0
        next_arrival = next(arrival_iter, None) if self._given is None else None
        if next_arrival is not None:
            self._at(next_arrival.at, _Kind.TASK_ARRIVES, next_arrival)
        for at, spec in self._given or ():
            self._at(at, _Kind.TASK_ARRIVES, spec)
        self._at(config.sample_interval_s, _Kind.SAMPLE, None)
        now = 0.0
        while self._heap:
            now, kind, _, payload = heapq.heappop(self._heap)
            self._now = now
            self.events += 1
            if kind is _Kind.TASK_ARRIVES:
                self._expire(now)  # before the arrival changes `_live`, not inside it
            if kind is _Kind.STEP_END:
                replica_index, result = payload
                self._step_end(replica_index, result, now)
            elif kind is _Kind.CALL_ARRIVES:
                self._call_arrives(payload, now)
            elif kind is _Kind.TOOL_DONE:
                self._tool_done(payload, now)
            elif kind is _Kind.TASK_ARRIVES and isinstance(payload, TaskSpec):
                interpreter = self._interpreters[payload.agent]
                seed = payload.seed if payload.seed is not None else started
                self._live += self._admit_task(interpreter, payload, seed, started, now)
                started += 1
            elif kind is _Kind.TASK_ARRIVES:
                arrival: Arrival = payload
                agent = (
                    arrival.agent
                    or self._mix_names[int(rng.choice(len(self._mix_names), p=self._mix_p))]
                )
                n_in = arrival.input_tokens or max(
                    1,
                    round(float(rng.lognormal(math.log(median), wl.input_tokens_sigma)))
                    if wl.input_tokens_sigma
                    else round(wl.input_tokens_mean),
                )
                self._live += self._task_arrives(agent, n_in, now, rng, started)
                started += 1
                if config.max_tasks is None or started < config.max_tasks:
                    following = next(arrival_iter, None)
                    if following is not None:
                        self._at(following.at, _Kind.TASK_ARRIVES, following)
            else:
                self._wake(now)  # queued tasks expire, or start once idle engines show it
                self._sample(now)
                if self._live > 0 or any(k is _Kind.TASK_ARRIVES for _, k, _, _ in self._heap):
                    self._at(now + config.sample_interval_s, _Kind.SAMPLE, None)
        return self._finish(now)

    def result_so_far(self) -> SimulationResult:
        """The result of what has run, after `run()` was interrupted (KeyboardInterrupt):
        the tasks measured so far, up to the last completion."""
        return self._finish(self._now, interrupted=True)

    def _task_arrives(
        self, agent: str, n_in: int, now: float, rng: np.random.Generator, index: int
    ) -> int:
        interpreter = self._interpreters.get(agent)
        if interpreter is None:
            known = ", ".join(sorted(self._interpreters))
            raise TraceError(f"arrival.trace: unknown agent {agent!r}; known: {known}")
        spec = TaskSpec(agent=agent, input=self._input_text(rng, n_in), mode=Mode.SYNTHETIC)
        seed = int(rng.integers(0, 2**48))
        return self._admit_task(interpreter, spec, seed, index, now)

    def _admit_task(
        self, interpreter: Interpreter, spec: TaskSpec, seed: int, index: int, now: float
    ) -> int:
        """A task arrives: admission starts it, queues it or refuses it; 1 unless refused."""
        driver = TaskDriver(
            interpreter,
            interpreter.start(f"task-{index}", spec, seed),
            self._router,
            self._views,
            accepted_at=now,
            limits=self._limits,
            priority=self._priority,
        )
        task = _Task(driver, measured=now >= self.config.warmup_s)
        verdict = self._admission.offer(task, driver.reservation, driver.deadline, now)
        if verdict is Verdict.REFUSED:
            self._refused += 1
            self._failures.append(None)
            return 0
        if verdict is Verdict.ADMITTED:
            self._start(task, driver.reservation, now)
        return 1

    def _start(self, task: _Task, reserved: int, now: float) -> None:
        """An admitted task's first actions; its reservation ends once they are routed."""
        task.admitted_at = now
        commands = task.driver.start(now)
        self._admission.release(reserved)
        self._carry_out(task, commands, now)

    def _views(self) -> list[ReplicaView]:
        return [r.view() for r in self._replicas]

    def _load(self) -> ClusterLoad:
        """What admission reads; simulated replicas never fail."""
        return cluster_load(self._views(), self._router.outstanding_tokens())

    def _expire(self, now: float) -> None:
        """Refuse the queued tasks that waited admission's limit."""
        for _ in self._admission.expired(now):
            self._refused += 1
            self._failures.append(None)
            self._live -= 1

    def _carry_out(self, task: _Task, commands: list[Command], now: float) -> None:
        """Do what the task's driver asks, on the virtual clock."""
        for command in commands:
            if isinstance(command, Dispatch):
                self._dispatch(task, command, now)
            elif isinstance(command, RunTool):
                action = command.action
                task.tools.add(action.action_id)
                self._at(now + action.latency_s, _Kind.TOOL_DONE, (task, action))
            elif isinstance(command, Cancel):
                for action_id in command.action_ids:
                    task.tools.discard(action_id)
                    call = task.calls.pop(action_id, None)
                    if call is not None:
                        self._cancel(call)
            elif isinstance(command, Finish):
                self._live -= 1
                self._admission.departed(now)
                if command.result is not None:
                    self._completed(task, command.result, now)
                else:
                    # Its calls count in the token rates when the task is measured.
                    failure = command.failure
                    usage = failure.usage if failure is not None and task.measured else None
                    self._failures.append(usage)

    def _dispatch(self, task: _Task, dispatch: Dispatch, now: float) -> None:
        sampling = dispatch.request.sampling
        index = self._by_name[dispatch.replica]
        sim = SimRequest(
            f"{task.driver.task.task_id}/{dispatch.action.action_id}",
            dispatch.request.prompt_token_ids,
            self.call_output(sampling.seed, sampling.max_tokens),
            now + self.config.dispatch_overhead_s,
            priority=dispatch.request.priority,
        )
        self._replicas[index].in_flight += 1
        self._calls += 1
        call = _Call(task, dispatch.action.action_id, index, sim)
        task.calls[call.action_id] = call
        self._at(sim.arrival, _Kind.CALL_ARRIVES, call)

    def _cancel(self, call: _Call) -> None:
        """The call's task ended: the engine drops it (a call still on its way is dropped
        when it arrives)."""
        call.cancelled = True
        replica = self._replicas[call.replica]
        replica.in_flight -= 1
        if call.request.owner is call:
            replica.scheduler.abort(call.request)

    def _call_arrives(self, call: _Call, now: float) -> None:
        if call.cancelled:
            return
        replica = self._replicas[call.replica]
        try:
            replica.scheduler.add(call.request)
        except ValueError as exc:
            # Longer than the model's context: the engine refuses it, as a live one would.
            replica.in_flight -= 1
            del call.task.calls[call.action_id]
            error = EngineError(ErrorCode.INVALID_ARGUMENT, str(exc))
            self._carry_out(
                call.task, call.task.driver.call_failed(call.action_id, error, now), now
            )
            self._wake(now)
            return
        call.request.owner = call
        if not replica.busy:
            self._start_step(call.replica, now)

    def _start_step(self, index: int, now: float) -> None:
        replica = self._replicas[index]
        result = replica.scheduler.step(now)
        if result is None:
            replica.busy = False
            return
        replica.busy = True
        self._at(result.end, _Kind.STEP_END, (index, result))

    def _step_end(self, index: int, result: StepResult, now: float) -> None:
        replica = self._replicas[index]
        produced = sum(n for _, n in result.produced)
        replica.output_tokens += produced
        self._window_output += produced
        for request in result.finished:
            call = request.owner
            assert isinstance(call, _Call)
            if not call.cancelled:
                replica.in_flight -= 1
                self._call_done(call, now)
        self._start_step(index, now)
        self._wake(now)

    def _call_done(self, call: _Call, now: float) -> None:
        request = call.request
        task = call.task
        del task.calls[call.action_id]
        first = request.first_token if request.first_token is not None else now
        n_out = request.target
        ttft = first - request.arrival
        e2e = now - request.arrival
        usage = CallUsage(len(request.prompt), request.cached_tokens or 0, n_out)
        timings = CallTimings(
            queue_time=(request.first_scheduled or request.arrival) - request.arrival,
            ttft=ttft,
            tpot=(e2e - ttft) / (n_out - 1) if n_out > 1 else None,
            itl=(),  # not kept here: every token's time would cost more than the step
            e2e=e2e,
        )
        self._window_prompt += usage.prompt_tokens
        result = CallResult(
            call.action_id, request.output_ids, "", FinishReason.LENGTH, usage, timings
        )
        self._admission.call_done(result)
        commands = task.driver.call_done(call.action_id, result, now, first_token_at=first)
        self._carry_out(task, commands, now)

    def _tool_done(self, payload: tuple[_Task, Action], now: float) -> None:
        task, action = payload
        if action.action_id not in task.tools:
            return  # its task ended
        task.tools.discard(action.action_id)
        outcome = simulated_tool_outcome(action, self._filler)
        self._carry_out(task, task.driver.tool_done(action.action_id, outcome, True, now), now)

    def _wake(self, now: float) -> None:
        """Start queued tasks while admission has room (after load dropped)."""
        self._expire(now)
        for task, reserved in self._admission.ready(now):
            self._start(task, reserved, now)

    def _completed(self, task: _Task, result: TaskResult, now: float) -> None:
        self._results.append(result)
        self._last_completion = now
        self._admission.finished(now - task.admitted_at)
        if task.measured:
            self._measured.append(result)
        self._window.append(result)

    def _sample(self, now: float) -> None:
        interval = self.config.sample_interval_s
        window = self._window

        def pct(values: Sequence[float]) -> Percentiles | None:
            if not values:
                return None
            p50, p90, p99 = np.percentile(np.asarray(values), (50, 90, 99)).tolist()
            return Percentiles(p50, p90, p99)

        self._samples.append(
            Sample(
                t=now,
                interval=interval,
                tasks_completed=len(window),
                output_tokens=self._window_output,
                prompt_tokens=self._window_prompt,
                task_latency=pct([r.usage.task_latency for r in window]),
                task_ttft=pct([r.usage.task_ttft for r in window]),
                kv_usage=tuple(r.scheduler.kv.usage for r in self._replicas),
                queue_depth=tuple(r.scheduler.num_waiting for r in self._replicas),
                running=tuple(len(r.scheduler.running) for r in self._replicas),
            )
        )
        self._window = []
        self._window_output = 0
        self._window_prompt = 0

    def _finish(self, now: float, interrupted: bool = False) -> SimulationResult:
        config = self.config
        measured = self._measured
        # Measured from the end of the warm-up to the last completion (not to the last
        # timeline sample, which may come later).
        end = self._last_completion
        span = end - config.warmup_s if measured else 0.0
        summary = summarize(measured, span, failed=self._failures)
        checks = slo_checks(config.slo, summary)
        # A run that measured no task has met nothing.
        slo_met = None if not checks else bool(measured) and all(c.met for c in checks)
        slo = config.slo

        def good(results: Sequence[TaskResult]) -> int:
            """Tasks meeting the SLO, by the one per-task rule the load generator uses."""
            return sum(
                1
                for r in results
                if slo.met_by_task(
                    r.usage.task_ttft if r.usage.final_output_tokens > 0 else None,
                    r.usage.task_latency,
                    [c.timings.tpot for c in r.calls if c.timings.tpot is not None],
                )
            )

        by_agent: dict[str, list[TaskResult]] = {}
        for r in measured:
            by_agent.setdefault(r.agent, []).append(r)
        order = [*self._mix_names, *sorted(set(by_agent) - set(self._mix_names))]
        agents = tuple(
            AgentBreakdown(
                agent,
                summarize(by_agent[agent], span),
                good(by_agent[agent]) / span if span > 0 else 0.0,
            )
            for agent in order
            if agent in by_agent
        )
        busy = [r.scheduler.busy_time for r in self._replicas]
        return SimulationResult(
            summary=summary,
            timeline=Timeline(tuple(r.name for r in self._replicas), tuple(self._samples)),
            results=tuple(self._results),
            failed=len(self._failures),
            simulated_s=end,
            events=self.events,
            calls=self._calls,
            slo_met=slo_met,
            goodput_tasks_per_s=good(measured) / span if span > 0 else 0.0,
            replica_names=tuple(r.name for r in self._replicas),
            gpu_utilization=float(np.mean(busy)) / end if end > 0 else 0.0,
            warmup_s=config.warmup_s,
            slo_checks=checks,
            agents=agents,
            interrupted=interrupted,
            refused=self._refused,
        )


def simulate(config: SimulationConfig) -> SimulationResult:
    return ClusterSimulation(config).run()
