"""Fast-forward cluster simulation: tasks, the router and many simulated replicas on one
virtual clock, in one process.

The same pure parts as the live orchestrator decide everything: the agent-program
`Interpreter` plans each task's calls and builds their prompts, a `Router` picks each
call's replica, and every replica is the `Scheduler` + `PerfModel` the sim engine runs.
Only the driver differs: instead of asyncio tasks and Ray calls, a discrete-event loop
jumps from one event (a task arriving, an engine step ending, a simulated tool
returning) to the next, so hours of traffic on a large cluster take seconds.
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
from orchestrator.config import (
    ConfigError,
    SchedulingPolicy,
)
from orchestrator.domain import (
    CallRecord,
    CallRequest,
    CallTimings,
    CallUsage,
    FinishReason,
    Mode,
    TaskResult,
    TaskSpec,
    ToolRecord,
)
from orchestrator.executor.accounting import task_usage
from orchestrator.executor.interpreter import (
    Action,
    ActionKind,
    Encoder,
    Interpreter,
    Outcome,
    TaskProgress,
)
from orchestrator.report import RunSummary, summarize
from orchestrator.routing import (
    PriorityPolicy,
    ReplicaView,
    Router,
    TaskService,
    make_router,
)
from orchestrator.sim.build import build_replica
from orchestrator.sim.catalog import load_catalog
from orchestrator.sim.config import SimulationConfig
from orchestrator.sim.scheduler import Scheduler, SimRequest, StepResult
from orchestrator.sim.timeline import AgentBreakdown, Percentiles, Sample, Timeline
from orchestrator.sim.tokens import SimTokenizer, output_token_ids
from orchestrator.workload.arrivals import Arrival, ArrivalProcess, arrivals
from orchestrator.workload.slo import SloCheck, slo_checks
from orchestrator.workload.traces import TraceError

# ---- the simulation --------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Task:
    progress: TaskProgress
    arrival: float
    interpreter: Interpreter
    calls: list[CallRecord] = field(default_factory=list)
    tools: list[ToolRecord] = field(default_factory=list)
    answer_first_token: float | None = None
    measured: bool = True
    failed: bool = False  # a call was refused (longer than the context); the rest drain
    service: TaskService = field(default_factory=lambda: TaskService(0.0))


@dataclass(slots=True, eq=False)
class _Call:
    task: _Task
    action: Action
    replica: int
    dispatched: float
    request: SimRequest


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
    failed: int
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
    ) -> None:
        self.config = config
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
        self._mix_names = list(config.workload.mix)
        weights = np.array([config.workload.mix[n] for n in self._mix_names], dtype=float)
        if weights.sum() <= 0:
            raise ConfigError("workload.mix: weights must add up to more than 0")
        self._mix_p = weights / weights.sum()
        self._replicas = [
            _Replica(f"sim-{i}", build_replica(config.engine, catalog))
            for i in range(config.replicas)
        ]
        self._priority = config.routing.priority_settings()
        engine_priority = (
            config.engine.scheduling_policy is SchedulingPolicy.PRIORITY
            or self._priority.policy is PriorityPolicy.PROGRAM_AWARE
        )
        for replica in self._replicas:
            # Inter-token gaps are not reported here: keeping every token's time would
            # cost more than the rest of the step.
            replica.scheduler.config = replace(
                replica.scheduler.config, record_token_times=False, priority=engine_priority
            )
        self._by_name = {r.name: i for i, r in enumerate(self._replicas)}
        self._router: Router = router or make_router(config.routing.router_settings())
        self._filler = encoder(" result row: value, source, note;" * 8)
        # Input words the tokenizer encodes as one token each, so a task's input is as
        # many tokens as the workload asks.
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        self._words = [f" {a}{b}{c}" for a in syllables[:8] for b in syllables for c in "ny"]
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
        self._failed = 0
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

    def _output(self, seed: int | None, n: int) -> tuple[int, ...]:
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
        words = rng.integers(0, len(self._words), tokens)
        return "".join(self._words[w] for w in words.tolist())

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
        next_arrival = next(arrival_iter, None)
        if next_arrival is not None:
            self._at(next_arrival.at, _Kind.TASK_ARRIVES, next_arrival)
        self._at(config.sample_interval_s, _Kind.SAMPLE, None)
        now = 0.0
        while self._heap:
            now, kind, _, payload = heapq.heappop(self._heap)
            self._now = now
            self.events += 1
            if kind is _Kind.STEP_END:
                replica_index, result = payload
                self._live -= self._step_end(replica_index, result, now)
            elif kind is _Kind.CALL_ARRIVES:
                self._call_arrives(payload, now)
            elif kind is _Kind.TOOL_DONE:
                self._live -= self._tool_done(payload, now)
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
        progress = interpreter.start(f"task-{index}", spec, seed)
        task = _Task(
            progress,
            now,
            interpreter,
            measured=now >= self.config.warmup_s,
            service=TaskService(now),
        )
        self._advance(task, now)
        return 1

    def _advance(self, task: _Task, now: float) -> None:
        for action in task.interpreter.advance(task.progress, 1 << 20):
            if action.kind is ActionKind.LLM:
                self._dispatch(task, action, now)
            else:
                self._at(now + action.latency_s, _Kind.TOOL_DONE, (task, action, now))

    def _dispatch(self, task: _Task, action: Action, now: float) -> None:
        sampling = action.sampling
        assert sampling is not None
        priority = task.service.priority(self._priority, now)
        request = CallRequest(
            action.action_id,
            action.prompt_token_ids,
            sampling,
            priority=priority,
            task_id=task.progress.task_id,
        )
        views = [r.view() for r in self._replicas]
        index = self._by_name[self._router.choose(request, views)]
        output = self._output(sampling.seed, sampling.max_tokens)
        sim = SimRequest(
            f"{task.progress.task_id}/{action.action_id}",
            action.prompt_token_ids,
            output,
            now + self.config.dispatch_overhead_s,
            priority=priority,
        )
        self._replicas[index].in_flight += 1
        self._calls += 1
        call = _Call(task, action, index, now, sim)
        self._at(sim.arrival, _Kind.CALL_ARRIVES, call)

    def _call_arrives(self, call: _Call, now: float) -> None:
        replica = self._replicas[call.replica]
        try:
            replica.scheduler.add(call.request)
        except ValueError:
            # Longer than the model's context: the task fails, as the live server would.
            replica.in_flight -= 1
            self._router.finished(call.action.action_id)
            if not call.task.failed:
                call.task.failed = True
                self._failed += 1
                self._live -= 1
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

    def _step_end(self, index: int, result: StepResult, now: float) -> int:
        replica = self._replicas[index]
        produced = sum(n for _, n in result.produced)
        replica.output_tokens += produced
        self._window_output += produced
        done = 0
        for request in result.finished:
            replica.in_flight -= 1
            call = request.owner
            assert isinstance(call, _Call)
            done += self._call_done(call, now)
        self._start_step(index, now)
        return done

    def _call_done(self, call: _Call, now: float) -> int:
        request = call.request
        task = call.task
        first = request.first_token if request.first_token is not None else now
        n_out = request.target
        ttft = first - request.arrival
        e2e = now - request.arrival
        itl: tuple[float, ...] = ()
        usage = CallUsage(len(request.prompt), request.cached_tokens or 0, n_out)
        timings = CallTimings(
            queue_time=(request.first_scheduled or request.arrival) - request.arrival,
            ttft=ttft,
            tpot=(e2e - ttft) / (n_out - 1) if n_out > 1 else None,
            itl=itl,
            e2e=e2e,
        )
        self._window_prompt += usage.prompt_tokens
        action = call.action
        task.calls.append(
            CallRecord(
                call_id=action.action_id,
                step=action.step,
                branch=action.branch,
                replica=self._replicas[call.replica].name,
                usage=usage,
                timings=timings,
                finish_reason=FinishReason.LENGTH,
                after=action.after,
                dispatch_to_result=now - call.dispatched,
            )
        )
        if action.answer:
            task.answer_first_token = first
        self._router.finished(action.action_id, request.output_ids)
        task.service.finished(action.action_id, action.after, e2e)
        task.interpreter.complete(task.progress, action.action_id, Outcome(request.output_ids, ""))
        return self._progress(task, now)

    def _tool_done(self, payload: tuple[_Task, Action, float], now: float) -> int:
        task, action, started = payload
        n = action.result_tokens
        ids = (self._filler * (n // len(self._filler) + 1))[:n]
        task.tools.append(
            ToolRecord(
                tool_id=action.action_id,
                step=action.step,
                branch=action.branch,
                tool=action.tool or "simulated",
                ok=True,
                elapsed=now - started,
                result_tokens=n,
                after=action.after,
            )
        )
        task.service.finished(action.action_id, action.after, 0.0)
        task.interpreter.complete(task.progress, action.action_id, Outcome(ids, ""))
        return self._progress(task, now)

    def _progress(self, task: _Task, now: float) -> int:
        """Dispatch what the task can run next; 1 when the task has just finished."""
        if task.failed:
            return 0
        if not task.progress.done:
            self._advance(task, now)
            if not task.progress.done:
                return 0
        answer = next((c for c in task.calls if c.call_id == task.progress.answer_id), None)
        first = task.answer_first_token
        usage = task_usage(
            task.calls,
            user_input_tokens=task.progress.user_input_tokens,
            final_output_tokens=answer.usage.output_tokens if answer else 0,
            task_ttft=(first - task.arrival) if first is not None else 0.0,
            task_latency=now - task.arrival,
            tools=task.tools,
        )
        result = TaskResult(
            task_id=task.progress.task_id,
            agent=task.progress.program.name,
            answer="",
            usage=usage,
            calls=tuple(task.calls),
            tools=tuple(task.tools),
        )
        self._results.append(result)
        self._last_completion = now
        if task.measured:
            self._measured.append(result)
        self._window.append(result)
        return 1

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
        summary = summarize(measured, span, failed=self._failed)
        checks = slo_checks(config.slo, summary)
        # A run that measured no task has met nothing.
        slo_met = None if not checks else bool(measured) and all(c.met for c in checks)
        ttft_bound = min((c.bound_s for c in checks if "ttft" in c.name), default=math.inf)
        latency_bound = min((c.bound_s for c in checks if "latency" in c.name), default=math.inf)

        def good(results: Sequence[TaskResult]) -> int:
            return sum(
                1
                for r in results
                if r.usage.task_ttft <= ttft_bound and r.usage.task_latency <= latency_bound
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
            failed=self._failed,
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
        )


def simulate(config: SimulationConfig) -> SimulationResult:
    return ClusterSimulation(config).run()
