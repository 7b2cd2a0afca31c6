"""Agentic metrics for Locust runs, aggregated exactly across distributed workers.

Pure: no locust, gevent or grpc import (protobuf messages only, for `TaskRecorder`), so
the master, the workers, the web UI, the reports and the tests all share one definition
of every figure (../shared/METRICS.md).

Workers never ship averages: each worker `drain()`s the raw `TaskSample`s it recorded since
its last report (a compact list of lists, msgpack/JSON-able) and the master `merge()`s
them, so every percentile is computed by numpy over the union of all workers' samples and
equals what one process seeing every task would have computed.

`AgenticStats.snapshot(slo)` returns this JSON-able dict; its shape is a contract with the
web-UI tab and the reports (add keys, never rename or remove them):

    {
      "summary": Figures,                 # every sample of the run
      "per_agent": [Figures + {"agent": str}, ...],   # sorted by agent name
      "timeseries": [Bucket, ...],        # one per `bucket_s` (default 1 s), oldest first,
                                          # gaps filled with zero-task buckets
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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.api.v1 import inflection_pb2 as pb

PERCENTILES = (50, 90, 95, 99)

# The wire form of one sample: the TaskSample fields in declaration order, tpots as a list.
WireSample = list[Any]


@dataclass(slots=True, frozen=True)
class TaskSample:
    """One task as a load-generating user saw it (METRICS.md per-task definitions)."""

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
        ]

    @classmethod
    def from_wire(cls, row: Sequence[Any]) -> TaskSample:
        if len(row) != 14:
            raise ValueError(f"agentic sample with {len(row)} fields, expected 14")
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
        )


@dataclass(slots=True, frozen=True)
class Slo:
    """Task-level SLO bounds; a task meets the SLO when it meets every bound given."""

    task_ttft_s: float | None = None
    task_latency_s: float | None = None
    call_tpot_p99_s: float | None = None  # p99 over the task's own calls

    @classmethod
    def parse(cls, text: str) -> Slo:
        """Parse `task_ttft=5s,task_latency=30s,call_tpot_p99=100ms` (units s, ms; bare
        numbers are seconds). Raises ValueError with a message fit for the command line."""
        bounds: dict[str, float] = {}
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"--slo: {item!r} is not name=value (e.g. task_ttft=5s)")
            if key.endswith("_s"):
                key = key[:-2]
            if key not in _SLO_KEYS:
                raise ValueError(
                    f"--slo: unknown bound {key!r}; known: {', '.join(sorted(_SLO_KEYS))}"
                )
            if key in bounds:
                raise ValueError(f"--slo: {key} given twice")
            bounds[key] = _parse_seconds(value.strip(), key)
        return cls(
            task_ttft_s=bounds.get("task_ttft"),
            task_latency_s=bounds.get("task_latency"),
            call_tpot_p99_s=bounds.get("call_tpot_p99"),
        )

    def is_empty(self) -> bool:
        return (
            self.task_ttft_s is None
            and self.task_latency_s is None
            and (self.call_tpot_p99_s is None)
        )

    def met_by(self, sample: TaskSample) -> bool:
        """Whether an ok task meets every bound (a failed task never does)."""
        if not sample.ok:
            return False
        if self.task_ttft_s is not None and (
            sample.task_ttft is None or sample.task_ttft > self.task_ttft_s
        ):
            return False
        if self.task_latency_s is not None and sample.task_latency > self.task_latency_s:
            return False
        if self.call_tpot_p99_s is not None and sample.call_tpots:
            p99 = float(np.percentile(np.asarray(sample.call_tpots), 99))
            if p99 > self.call_tpot_p99_s:
                return False
        return True

    def to_dict(self) -> dict[str, float | None]:
        return {
            "task_ttft_s": self.task_ttft_s,
            "task_latency_s": self.task_latency_s,
            "call_tpot_p99_s": self.call_tpot_p99_s,
        }


_SLO_KEYS = frozenset({"task_ttft", "task_latency", "call_tpot_p99"})
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?$")


def _parse_seconds(value: str, key: str) -> float:
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"--slo: {key}={value!r} is not a duration (e.g. 5s, 100ms, 2.5)")
    seconds = float(match.group(1)) * (0.001 if match.group(2) == "ms" else 1.0)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"--slo: {key} must be a positive duration, got {value!r}")
    return seconds


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean and p50/p90/p95/p99 (numpy's linear interpolation); None when empty."""
    array = np.fromiter(values, dtype=float)
    out: dict[str, float | int | None] = {"count": int(array.size)}
    if array.size == 0:
        out["mean"] = None
        out.update({f"p{p}": None for p in PERCENTILES})
        return out
    # fsum is exactly rounded, so the mean does not depend on the order samples arrived in
    # (merged workers must equal one process seeing every task, bit for bit).
    out["mean"] = math.fsum(array.tolist()) / array.size
    for p, v in zip(PERCENTILES, np.percentile(array, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return out


def _pct(values: Sequence[float], p: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), p)) if values else None


def figures(
    samples: Sequence[TaskSample], slo: Slo | None, dropped_tasks: int = 0
) -> dict[str, Any]:
    """The `Figures` dict of the module docstring for one set of samples."""
    ok = [s for s in samples if s.ok]
    if samples:
        start = min(s.completed_at - s.task_latency for s in samples)
        duration = max(s.completed_at for s in samples) - start
    else:
        duration = 0.0
    rate = 1.0 / duration if duration > 0 else 0.0
    good = sum(1 for s in ok if slo.met_by(s)) if slo is not None else len(ok)
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


def timeseries(samples: Sequence[TaskSample], bucket_s: float = 1.0) -> list[dict[str, Any]]:
    """Per-bucket rates and latency percentiles, keyed by completion time."""
    if not samples:
        return []
    first = math.floor(min(s.completed_at for s in samples) / bucket_s)
    last = math.floor(max(s.completed_at for s in samples) / bucket_s)
    buckets: list[list[TaskSample]] = [[] for _ in range(last - first + 1)]
    for s in samples:
        buckets[math.floor(s.completed_at / bucket_s) - first].append(s)
    rows = []
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


class AgenticStats:
    """Raw task samples of a run. On a worker: `add` then `drain` every report; on the
    master (or a local runner): `merge` what workers send, then `snapshot`."""

    def __init__(self) -> None:
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

    def add(self, sample: TaskSample) -> None:
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

    def snapshot(self, slo: Slo | None = None, bucket_s: float = 1.0) -> dict[str, Any]:
        """The JSON-able dict documented in the module docstring."""
        agents = sorted({s.agent for s in self._samples})
        per_agent = []
        for agent in agents:
            entry: dict[str, Any] = {"agent": agent}
            entry.update(figures([s for s in self._samples if s.agent == agent], slo))
            per_agent.append(entry)
        return {
            "summary": figures(self._samples, slo, self.dropped_tasks),
            "per_agent": per_agent,
            "timeseries": timeseries(self._samples, bucket_s),
        }


@dataclass(slots=True, frozen=True)
class StepEntry:
    """One finished step as the Locust stats show it."""

    step: str
    elapsed_s: float  # llm: the call's engine-side e2e; tool: its elapsed time
    output_tokens: int  # llm: the call's output tokens; tool: 0


class TaskRecorder:
    """Folds one task's RunTask event stream into a TaskSample. Pure: times are passed in,
    so tests feed it messages and clocks directly."""

    def __init__(self, agent: str, sent_at: float) -> None:
        self.agent = agent
        self.sent_at = sent_at  # perf_counter when the request was sent
        self.accepted_at: float | None = None
        self.first_delta_at: float | None = None
        self.tpots: list[float] = []
        self.result: pb.TaskResult | None = None

    def on_event(self, event: pb.TaskEvent, now: float) -> StepEntry | None:
        kind = event.WhichOneof("event")
        if kind == "answer_delta":
            if self.first_delta_at is None:
                self.first_delta_at = now
        elif kind == "step_finished":
            finished = event.step_finished
            if finished.HasField("tool"):
                return StepEntry(finished.tool.step, finished.tool.elapsed, 0)
            call = finished.call
            if call.timings.HasField("tpot"):
                self.tpots.append(call.timings.tpot)
            return StepEntry(call.step, call.timings.e2e, call.usage.output_tokens)
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
        u = usage if usage is not None else pb.TaskUsage()
        return TaskSample(
            completed_at=wall,
            agent=self.agent,
            ok=status == "OK",
            status=status,
            llm_calls=u.llm_calls,
            prompt_tokens=u.prompt_tokens_total,
            cached_tokens=u.cached_tokens_total,
            output_tokens=u.output_tokens_total,
            user_input_tokens=u.user_input_tokens,
            final_output_tokens=u.final_output_tokens,
            token_amplification=u.token_amplification,
            task_ttft=self.ttft,
            # METRICS.md: accepted -> completed, as the client saw both.
            task_latency=now - (self.accepted_at or self.sent_at),
            call_tpots=tuple(self.tpots),
        )
