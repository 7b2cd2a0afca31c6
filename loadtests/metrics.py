"""Agentic metrics for Locust runs, aggregated exactly across distributed workers.

Pure: no locust, gevent or grpc import (protobuf messages and orchestrator.domain records
only, for the step folds `StepFold` and `TaskRecorder`), so the master, the workers, the
web UI, the reports and the tests all share one definition of every figure
(docs/metrics.md).

Workers never ship averages: each worker `drain()`s the raw `TaskSample`s it recorded since
its last report (a compact list of lists, msgpack/JSON-able) and the master `merge()`s
them, so every percentile is computed by numpy over the union of all workers' samples and
equals what one process seeing every task would have computed.

`AgenticStats.snapshot(slo)` returns this JSON-able dict, typed as the `Snapshot`,
`Figures`, `Dist` and `Bucket` TypedDicts below; its shape is a contract with the web-UI
tab and the reports (add keys, never rename or remove them):

    {
      "summary": Figures,                 # every sample of the run
      "per_agent": [Figures + {"agent": str}, ...],   # sorted by agent name
      "timeseries": [Bucket, ...],        # one per `bucket_s` (default 1 s), oldest first,
                                          # gaps filled with zero-task buckets
      "warmup": {"seconds": float, "excluded_tasks": int},  # only when a warm-up is set:
                                          # tasks that started in it are in no figure above
    }

    Figures = {
      "tasks": int,                 # samples recorded (ok + failed)
      "ok": int, "failed": int,
      "dropped_tasks": int,         # open loop: arrivals not started (outstanding bound);
                                    # 0 in per_agent entries
      "duration_s": float,          # first task start -> last completion (0 if no task)
      "tasks_per_s": float,         # ok tasks / duration_s
      "goodput_per_s": float,       # ok tasks meeting every SLO bound / duration_s
      "goodput_fraction": float | None,  # of ok tasks; None when no ok task
      "slo": {"task_ttft_s": float|None, "task_latency_s": float|None,
              "call_tpot_p99_s": float|None} | None,
      "token_amplification": Dist,  # over ok tasks
      "llm_calls_per_task": Dist,   # over ok tasks
      "prompt_tokens_per_s": float, # all samples (failed tasks' partial usage too)
      "output_tokens_per_s": float,
      "prefix_hit_rate": float | None,   # cached / prompt tokens, all samples
      "task_ttft_s": Dist,          # ok tasks that streamed an answer token
      "task_latency_s": Dist,       # ok tasks
      "call_tpot_s": Dist,          # every call of ok tasks with a tpot (pooled)
      "failures": {status_name: int},    # e.g. {"DEADLINE_EXCEEDED": 3}
    }
    Dist = {"count": int, "mean": float|None, "p50": ..., "p90": ..., "p95": ..., "p99": ...}
    Bucket = {
      "t": float,                   # bucket start, unix seconds
      "tasks_per_s": float, "failures_per_s": float, "output_tokens_per_s": float,
      "task_latency_p50_s": float|None, "task_latency_p99_s": float|None,
      "task_ttft_p50_s": float|None, "task_ttft_p99_s": float|None,
    }

Tokens per second use the whole run's duration; timeseries buckets are keyed by each
task's completion time, so a task's tokens land in the second it completed.

Two more views of the same samples: `live_figures` (what `inflection load` shows while a
run goes: totals plus a trailing window's rates and percentiles) and `task_record` (one
line of `tasks.jsonl`, the per-task export, optionally with the task's calls).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NotRequired, TypedDict

import numpy as np

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.domain import CallRecord, CallUsage, TaskUsage, ToolRecord
from orchestrator.report import Distribution
from orchestrator.workload.slo import SloConfig

LIVE_WINDOW_S = 10.0  # the trailing window of the live rates and percentiles

# The wire form of one sample: the TaskSample fields in declaration order, tpots as a list;
# the calls (a list of CallSample wire rows) only when they were kept.
WireSample = list[Any]


class Dist(TypedDict):
    """A distribution's figures (`distribution`); None when it had no values."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class Figures(TypedDict):
    """One set of samples' figures (`figures`; the module docstring says what each is)."""

    tasks: int
    ok: int
    failed: int
    dropped_tasks: int
    duration_s: float
    tasks_per_s: float
    goodput_per_s: float
    goodput_fraction: float | None
    slo: dict[str, float | None] | None
    token_amplification: Dist
    llm_calls_per_task: Dist
    prompt_tokens_per_s: float
    output_tokens_per_s: float
    prefix_hit_rate: float | None
    task_ttft_s: Dist
    task_latency_s: Dist
    call_tpot_s: Dist
    failures: dict[str, int]


class AgentFigures(Figures):
    agent: str


class Bucket(TypedDict):
    """One `timeseries` bucket."""

    t: float
    tasks_per_s: float
    failures_per_s: float
    output_tokens_per_s: float
    task_latency_p50_s: float | None
    task_latency_p99_s: float | None
    task_ttft_p50_s: float | None
    task_ttft_p99_s: float | None


class Warmup(TypedDict):
    seconds: float
    excluded_tasks: int


class SweepStepRow(TypedDict):
    rate: float
    tasks: int
    good_fraction: float


class SweepResult(TypedDict):
    """The locustfile's in-run sweep (`--sweep start=...`), once it has run."""

    steps: list[SweepStepRow]
    highest_rate_meeting_slo: float | None
    min_good: float
    points: list[dict[str, Any]]  # loadtests.sweep_curve.SweepPoint.to_dict()


class Snapshot(TypedDict):
    """`AgenticStats.snapshot()`; the locustfile's JSON adds `workers` and, after an
    in-run sweep, `sweep`; the web UI's JSON adds `rolling`."""

    summary: Figures
    per_agent: list[AgentFigures]
    timeseries: list[Bucket]
    warmup: NotRequired[Warmup]
    workers: NotRequired[dict[str, dict[str, int]]]
    sweep: NotRequired[SweepResult]
    rolling: NotRequired[dict[str, Any]]  # the web UI's /agentic/stats.json: webui.rolling_json


@dataclass(slots=True, frozen=True)
class CallSample:
    """One finished step of a task, as its `step_finished` event told the client: an LLM
    call (engine-side usage and timings) or a tool step."""

    kind: str  # "llm" or "tool"
    step: str
    branch: int
    target: str  # llm: the replica that served it; tool: the tool's name
    at_s: float  # client-side: request sent -> this step's event received, seconds
    elapsed_s: float  # llm: engine-side e2e; tool: its elapsed time
    prompt_tokens: int = 0  # llm only
    cached_tokens: int = 0  # llm only
    output_tokens: int = 0  # llm: output tokens; tool: result tokens added to the context
    queue_s: float | None = None  # llm only
    ttft_s: float | None = None  # llm only, engine-side
    tpot_s: float | None = None  # llm only, when it produced more than one token
    finish: str = ""  # llm: "stop" or "length"; tool: "ok" or "error"

    def to_wire(self) -> list[Any]:
        return [
            self.kind,
            self.step,
            self.branch,
            self.target,
            self.at_s,
            self.elapsed_s,
            self.prompt_tokens,
            self.cached_tokens,
            self.output_tokens,
            self.queue_s,
            self.ttft_s,
            self.tpot_s,
            self.finish,
        ]

    @classmethod
    def from_wire(cls, row: Sequence[Any]) -> CallSample:
        if len(row) != 13:
            raise ValueError(f"agentic call record with {len(row)} fields, expected 13")
        return cls(
            kind=str(row[0]),
            step=str(row[1]),
            branch=int(row[2]),
            target=str(row[3]),
            at_s=float(row[4]),
            elapsed_s=float(row[5]),
            prompt_tokens=int(row[6]),
            cached_tokens=int(row[7]),
            output_tokens=int(row[8]),
            queue_s=None if row[9] is None else float(row[9]),
            ttft_s=None if row[10] is None else float(row[10]),
            tpot_s=None if row[11] is None else float(row[11]),
            finish=str(row[12]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The call's `tasks.jsonl` entry: keys that do not apply to its kind are left out."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "step": self.step,
            "branch": self.branch,
            ("replica" if self.kind == "llm" else "tool"): self.target,
            "at_s": self.at_s,
            "elapsed_s": self.elapsed_s,
        }
        if self.kind == "llm":
            out.update(
                prompt_tokens=self.prompt_tokens,
                cached_tokens=self.cached_tokens,
                output_tokens=self.output_tokens,
                queue_s=self.queue_s,
                ttft_s=self.ttft_s,
                tpot_s=self.tpot_s,
                finish_reason=self.finish,
            )
        else:
            out.update(result_tokens=self.output_tokens, ok=self.finish == "ok")
        return out


@dataclass(slots=True, frozen=True)
class TaskSample:
    """One task as a load-generating user saw it (docs/metrics.md per-task definitions)."""

    completed_at: float  # unix seconds when the task ended (ok or not)
    agent: str
    ok: bool
    status: str  # gRPC status name ("DEADLINE_EXCEEDED"), or "OK"
    llm_calls: int
    prompt_tokens: int  # prompt_tokens_total
    cached_tokens: int  # cached_tokens_total
    output_tokens: int  # output_tokens_total
    user_input_tokens: int
    final_output_tokens: int
    token_amplification: float
    task_ttft: float | None  # client-side: accepted -> first answer delta; None if none came
    task_latency: float  # client-side: request sent -> stream ended, seconds
    call_tpots: tuple[float, ...]  # engine-side tpot of each call that had one
    # Every step of the task; kept only when per-call export is on (AgenticStats.keep_calls).
    calls: tuple[CallSample, ...] = ()

    @property
    def started_at(self) -> float:
        """Unix seconds when the task started, as the client measured its latency."""
        return self.completed_at - self.task_latency

    def to_wire(self) -> WireSample:
        return [
            self.completed_at,
            self.agent,
            self.ok,
            self.status,
            self.llm_calls,
            self.prompt_tokens,
            self.cached_tokens,
            self.output_tokens,
            self.user_input_tokens,
            self.final_output_tokens,
            self.token_amplification,
            self.task_ttft,
            self.task_latency,
            list(self.call_tpots),
        ] + ([[c.to_wire() for c in self.calls]] if self.calls else [])

    @classmethod
    def from_wire(cls, row: Sequence[Any]) -> TaskSample:
        if len(row) not in (14, 15):
            raise ValueError(f"agentic sample with {len(row)} fields, expected 14 or 15")
        return cls(
            completed_at=float(row[0]),
            agent=str(row[1]),
            ok=bool(row[2]),
            status=str(row[3]),
            llm_calls=int(row[4]),
            prompt_tokens=int(row[5]),
            cached_tokens=int(row[6]),
            output_tokens=int(row[7]),
            user_input_tokens=int(row[8]),
            final_output_tokens=int(row[9]),
            token_amplification=float(row[10]),
            task_ttft=None if row[11] is None else float(row[11]),
            task_latency=float(row[12]),
            call_tpots=tuple(float(t) for t in row[13]),
            calls=tuple(CallSample.from_wire(c) for c in row[14]) if len(row) == 15 else (),
        )


def meets_slo(slo: SloConfig, sample: TaskSample) -> bool:
    """Whether a task meets every bound of the SLO (a failed task never does)."""
    return sample.ok and slo.met_by_task(sample.task_ttft, sample.task_latency, sample.call_tpots)


def distribution(values: Iterable[float]) -> Dist:
    """count, mean and p50/p90/p95/p99 (orchestrator.report.Distribution: numpy's linear
    interpolation, an exactly rounded mean); None when empty."""
    array = list(values)
    if not array:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None}
    d = Distribution.of(array)
    return {
        "count": len(array),
        "mean": d.mean,
        "p50": d.p50,
        "p90": d.p90,
        "p95": d.p95,
        "p99": d.p99,
    }


def _pct(values: Sequence[float], p: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), p)) if values else None


def figures(
    samples: Sequence[TaskSample], slo: SloConfig | None, dropped_tasks: int = 0
) -> Figures:
    """The `Figures` dict of the module docstring for one set of samples."""
    ok = [s for s in samples if s.ok]
    if samples:
        start = min(s.completed_at - s.task_latency for s in samples)
        duration = max(s.completed_at for s in samples) - start
    else:
        duration = 0.0
    rate = 1.0 / duration if duration > 0 else 0.0
    good = sum(1 for s in ok if meets_slo(slo, s)) if slo is not None else len(ok)
    prompt = sum(s.prompt_tokens for s in samples)
    cached = sum(s.cached_tokens for s in samples)
    failures: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            failures[s.status] = failures.get(s.status, 0) + 1
    return {
        "tasks": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "dropped_tasks": dropped_tasks,
        "duration_s": duration,
        "tasks_per_s": len(ok) * rate,
        "goodput_per_s": good * rate,
        "goodput_fraction": good / len(ok) if ok else None,
        "slo": slo.to_dict() if slo is not None else None,
        "token_amplification": distribution(s.token_amplification for s in ok),
        "llm_calls_per_task": distribution(float(s.llm_calls) for s in ok),
        "prompt_tokens_per_s": prompt * rate,
        "output_tokens_per_s": sum(s.output_tokens for s in samples) * rate,
        "prefix_hit_rate": cached / prompt if prompt else None,
        "task_ttft_s": distribution(s.task_ttft for s in ok if s.task_ttft is not None),
        "task_latency_s": distribution(s.task_latency for s in ok),
        "call_tpot_s": distribution(t for s in ok for t in s.call_tpots),
        "failures": dict(sorted(failures.items())),
    }


def timeseries(samples: Sequence[TaskSample], bucket_s: float = 1.0) -> list[Bucket]:
    """Per-bucket rates and latency percentiles, keyed by completion time."""
    if not samples:
        return []
    first = math.floor(min(s.completed_at for s in samples) / bucket_s)
    last = math.floor(max(s.completed_at for s in samples) / bucket_s)
    buckets: list[list[TaskSample]] = [[] for _ in range(last - first + 1)]
    for s in samples:
        buckets[math.floor(s.completed_at / bucket_s) - first].append(s)
    rows: list[Bucket] = []
    for i, bucket in enumerate(buckets):
        ok = [s for s in bucket if s.ok]
        latencies = [s.task_latency for s in ok]
        ttfts = [s.task_ttft for s in ok if s.task_ttft is not None]
        rows.append(
            {
                "t": (first + i) * bucket_s,
                "tasks_per_s": len(ok) / bucket_s,
                "failures_per_s": (len(bucket) - len(ok)) / bucket_s,
                "output_tokens_per_s": sum(s.output_tokens for s in bucket) / bucket_s,
                "task_latency_p50_s": _pct(latencies, 50),
                "task_latency_p99_s": _pct(latencies, 99),
                "task_ttft_p50_s": _pct(ttfts, 50),
                "task_ttft_p99_s": _pct(ttfts, 99),
            }
        )
    return rows


@dataclass(slots=True, frozen=True)
class LiveFigures:
    """A running test at one moment: totals since the start, and rates and percentiles
    over the trailing window (ok tasks that completed in it, warm-up tasks left out)."""

    tasks: int  # finished so far, ok or failed, warm-up included
    failed: int
    warmup_tasks: int  # of `tasks`, those that started in the warm-up
    window_s: float  # the window actually covered (shorter at the start of a run)
    tasks_per_s: float
    output_tokens_per_s: float
    task_ttft_p50_s: float | None
    task_ttft_p99_s: float | None
    task_latency_p50_s: float | None
    task_latency_p99_s: float | None
    token_amplification_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveFigures:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def live_figures(
    samples: Sequence[TaskSample],
    now: float,
    started_at: float | None = None,
    measure_from: float | None = None,
    window_s: float = LIVE_WINDOW_S,
) -> LiveFigures:
    """LiveFigures of `samples` at `now` (unix s); `measure_from` ends the warm-up."""
    since = now - window_s if started_at is None else max(now - window_s, started_at)
    span = now - since
    recent = [
        s
        for s in samples
        if s.completed_at > since and (measure_from is None or s.started_at >= measure_from)
    ]
    ok = [s for s in recent if s.ok]
    ttfts = [s.task_ttft for s in ok if s.task_ttft is not None]
    latencies = [s.task_latency for s in ok]
    amplification = [s.token_amplification for s in ok]
    return LiveFigures(
        tasks=len(samples),
        failed=sum(1 for s in samples if not s.ok),
        warmup_tasks=0
        if measure_from is None
        else sum(1 for s in samples if s.started_at < measure_from),
        window_s=span,
        tasks_per_s=len(ok) / span if span > 0 else 0.0,
        output_tokens_per_s=sum(s.output_tokens for s in recent) / span if span > 0 else 0.0,
        task_ttft_p50_s=_pct(ttfts, 50),
        task_ttft_p99_s=_pct(ttfts, 99),
        task_latency_p50_s=_pct(latencies, 50),
        task_latency_p99_s=_pct(latencies, 99),
        token_amplification_mean=math.fsum(amplification) / len(amplification)
        if amplification
        else None,
    )


def task_record(sample: TaskSample, *, warmup: bool = False) -> dict[str, Any]:
    """One line of `tasks.jsonl`: the task's status, usage and client-side timings (unix
    seconds and seconds), `warmup` when the figures leave it out, and its `calls` when
    they were kept (--export-calls)."""
    record: dict[str, Any] = {
        "agent": sample.agent,
        "status": sample.status,
        "ok": sample.ok,
        "started_at": sample.started_at,
        "completed_at": sample.completed_at,
        "latency_s": sample.task_latency,
        "ttft_s": sample.task_ttft,
        "warmup": warmup,
        "usage": {
            "llm_calls": sample.llm_calls,
            "prompt_tokens": sample.prompt_tokens,
            "cached_tokens": sample.cached_tokens,
            "output_tokens": sample.output_tokens,
            "user_input_tokens": sample.user_input_tokens,
            "final_output_tokens": sample.final_output_tokens,
            "token_amplification": sample.token_amplification,
        },
    }
    if sample.calls:
        record["calls"] = [c.to_dict() for c in sample.calls]
    return record


class AgenticStats:
    """Raw task samples of a run. On a worker: `add` then `drain` every report; on the
    master (or a local runner): `merge` what workers send, then `snapshot`."""

    def __init__(self) -> None:
        # Per-call records cost memory and worker->master bandwidth: only with --export-calls.
        self.keep_calls = False
        self.started_at: float | None = None  # unix s when the test started (start())
        self.warmup_s = 0.0  # tasks that started this long after started_at are left out
        self._samples: list[TaskSample] = []
        self._pending: list[TaskSample] = []  # not yet drained to the master
        self.dropped_tasks = 0  # open loop: arrivals skipped because of the outstanding bound
        self._pending_dropped = 0
        self.recorded = 0  # samples this process recorded itself (a worker's running total)
        # On the master, per worker: samples merged from it, and the running total it
        # last said it had recorded (the two agree once its last report is in).
        self.merged_from: dict[str, int] = {}
        self.reported_by: dict[str, int] = {}

    @property
    def samples(self) -> list[TaskSample]:
        return list(self._samples)

    @property
    def measure_from(self) -> float | None:
        """Tasks that started before this (unix s) are warm-up; None without a warm-up."""
        if self.started_at is None or self.warmup_s <= 0:
            return None
        return self.started_at + self.warmup_s

    def measured(self) -> list[TaskSample]:
        """The samples the figures use: all of them but the warm-up's."""
        since = self.measure_from
        if since is None:
            return list(self._samples)
        return [s for s in self._samples if s.started_at >= since]

    def start(self, now: float, warmup_s: float = 0.0) -> None:
        """A new test starts at `now` (unix s): forget earlier samples, set the warm-up."""
        self.reset()
        self.started_at = now
        self.warmup_s = warmup_s

    def add(self, sample: TaskSample) -> None:
        if sample.calls and not self.keep_calls:
            sample = replace(sample, calls=())
        self._samples.append(sample)
        self._pending.append(sample)
        self.recorded += 1

    def add_dropped(self, count: int = 1) -> None:
        self.dropped_tasks += count
        self._pending_dropped += count

    def drain(self) -> list[WireSample]:
        """The samples recorded since the last drain, in wire form (for report_to_master)."""
        out = [s.to_wire() for s in self._pending]
        self._pending = []
        return out

    def drain_dropped(self) -> int:
        """Dropped arrivals counted since the last call (ship beside `drain()`)."""
        count, self._pending_dropped = self._pending_dropped, 0
        return count

    def merge(
        self,
        data: Iterable[Sequence[Any]],
        dropped: int = 0,
        *,
        source: str | None = None,
        recorded: int | None = None,
    ) -> None:
        """Add a worker's drained samples (and dropped-arrival count) on the master.
        `source` names the worker and `recorded` is its own running total, so a run can
        show that the master's totals are the sum of what each worker saw."""
        merged = 0
        for row in data:
            self._samples.append(TaskSample.from_wire(row))
            merged += 1
        self.dropped_tasks += dropped
        if source is not None:
            self.merged_from[source] = self.merged_from.get(source, 0) + merged
            if recorded is not None:
                self.reported_by[source] = recorded

    def workers(self) -> dict[str, dict[str, int]]:
        """Per worker: samples merged from it and the total it reported recording."""
        return {
            source: {"merged": merged, "recorded": self.reported_by.get(source, merged)}
            for source, merged in sorted(self.merged_from.items())
        }

    def reset(self) -> None:
        self._samples = []
        self._pending = []
        self.dropped_tasks = 0
        self._pending_dropped = 0
        self.recorded = 0
        self.merged_from = {}
        self.reported_by = {}
        self.started_at = None
        self.warmup_s = 0.0

    def snapshot(self, slo: SloConfig | None = None, bucket_s: float = 1.0) -> Snapshot:
        """The JSON-able dict documented in the module docstring."""
        samples = self.measured()
        agents = sorted({s.agent for s in samples})
        per_agent: list[AgentFigures] = [
            {"agent": agent, **figures([s for s in samples if s.agent == agent], slo)}
            for agent in agents
        ]
        out: Snapshot = {
            "summary": figures(samples, slo, self.dropped_tasks),
            "per_agent": per_agent,
            "timeseries": timeseries(samples, bucket_s),
        }
        if self.measure_from is not None:
            excluded = len(self._samples) - len(samples)
            out["warmup"] = {"seconds": self.warmup_s, "excluded_tasks": excluded}
        return out

    def task_records(self) -> list[dict[str, Any]]:
        """Every task of the run as `task_record`s, in completion order."""
        since = self.measure_from
        ordered = sorted(self._samples, key=lambda s: s.completed_at)
        return [task_record(s, warmup=since is not None and s.started_at < since) for s in ordered]

    def live(self, now: float, window_s: float = LIVE_WINDOW_S) -> LiveFigures:
        """The figures `inflection load` shows while the run goes (see LiveFigures)."""
        return live_figures(self._samples, now, self.started_at, self.measure_from, window_s)


@dataclass(slots=True, frozen=True)
class StepEntry:
    """One finished step as the Locust stats show it."""

    step: str
    elapsed_s: float  # llm: the call's engine-side e2e; tool: its elapsed time
    output_tokens: int  # llm: the call's output tokens; tool: 0


# Either target's form of a step's records: the gRPC stream's messages or the task
# driver's domain objects (the OpenAI target runs the driver itself); the same field names.
CallUsageLike = pb.CallUsage | CallUsage
TaskUsageLike = pb.TaskUsage | TaskUsage
_ToolStep = pb.ToolRecord | ToolRecord
_LlmStep = pb.CallRecord | CallRecord  # tpot and finish reason differ in type: passed apart


class StepFold:
    """A task's finished steps folded into the per-call TPOTs and CallSamples of its
    TaskSample: what the gRPC user (`TaskRecorder`, from the RunTask stream) and the
    OpenAI target's user (from the task driver's StepFinished events) both record. Pure:
    times are passed in. `keep_calls=False` keeps no CallSample (the TPOTs still)."""

    def __init__(self, agent: str, sent_at: float, *, keep_calls: bool = True) -> None:
        self.agent = agent
        self.sent_at = sent_at  # perf_counter when the request was sent
        self.keep_calls = keep_calls
        self.tpots: list[float] = []
        self.calls: list[CallSample] = []

    def add_tool(self, tool: _ToolStep, now: float) -> StepEntry:
        if self.keep_calls:
            self.calls.append(
                CallSample(
                    kind="tool",
                    step=tool.step,
                    branch=tool.branch,
                    target=tool.tool,
                    at_s=now - self.sent_at,
                    elapsed_s=tool.elapsed,
                    output_tokens=tool.result_tokens,
                    finish="ok" if tool.ok else "error",
                )
            )
        return StepEntry(tool.step, tool.elapsed, 0)

    def add_llm(self, call: _LlmStep, tpot: float | None, finish: str, now: float) -> StepEntry:
        t = call.timings
        if tpot is not None:
            self.tpots.append(tpot)
        if self.keep_calls:
            self.calls.append(
                CallSample(
                    kind="llm",
                    step=call.step,
                    branch=call.branch,
                    target=call.replica,
                    at_s=now - self.sent_at,
                    elapsed_s=t.e2e,
                    prompt_tokens=call.usage.prompt_tokens,
                    cached_tokens=call.usage.cached_prompt_tokens,
                    output_tokens=call.usage.output_tokens,
                    queue_s=t.queue_time,
                    ttft_s=t.ttft,
                    tpot_s=tpot,
                    finish=finish,
                )
            )
        return StepEntry(call.step, t.e2e, call.usage.output_tokens)

    def task_sample(
        self,
        wall: float,
        status: str,
        usage: TaskUsageLike | None,
        *,
        task_ttft: float | None,
        task_latency: float,
    ) -> TaskSample:
        """The task's sample; `usage` is the completed usage, or a failure's partial one
        (None: zeros)."""
        u = usage
        return TaskSample(
            completed_at=wall,
            agent=self.agent,
            ok=status == "OK",
            status=status,
            llm_calls=u.llm_calls if u is not None else 0,
            prompt_tokens=u.prompt_tokens_total if u is not None else 0,
            cached_tokens=u.cached_tokens_total if u is not None else 0,
            output_tokens=u.output_tokens_total if u is not None else 0,
            user_input_tokens=u.user_input_tokens if u is not None else 0,
            final_output_tokens=u.final_output_tokens if u is not None else 0,
            token_amplification=u.token_amplification if u is not None else 0.0,
            task_ttft=task_ttft,
            task_latency=task_latency,
            call_tpots=tuple(self.tpots),
            calls=tuple(self.calls),
        )


class TaskRecorder(StepFold):
    """Folds one task's RunTask event stream into a TaskSample. Pure: times are passed in,
    so tests feed it messages and clocks directly."""

    def __init__(self, agent: str, sent_at: float) -> None:
        super().__init__(agent, sent_at)
        self.accepted_at: float | None = None
        self.first_delta_at: float | None = None
        self.result: pb.TaskResult | None = None

    def on_event(self, event: pb.TaskEvent, now: float) -> StepEntry | None:
        kind = event.WhichOneof("event")
        if kind == "answer_delta":
            if self.first_delta_at is None:
                self.first_delta_at = now
        elif kind == "step_finished":
            finished = event.step_finished
            if finished.HasField("tool"):
                return self.add_tool(finished.tool, now)
            call = finished.call
            tpot = call.timings.tpot if call.timings.HasField("tpot") else None
            return self.add_llm(call, tpot, call.finish_reason, now)
        elif kind == "accepted":
            self.accepted_at = now
        elif kind == "completed":
            self.result = event.completed
        return None

    @property
    def ttft(self) -> float | None:
        if self.first_delta_at is None:
            return None
        return self.first_delta_at - (self.accepted_at or self.sent_at)

    def sample(
        self, now: float, wall: float, status: str, usage: pb.TaskUsage | None
    ) -> TaskSample:
        """The task's sample; `usage` is the completed usage, or a failure's partial one."""
        return self.task_sample(
            wall,
            status,
            usage,
            task_ttft=self.ttft,
            # docs/metrics.md: accepted -> completed, as the client saw both.
            task_latency=now - (self.accepted_at or self.sent_at),
        )
