"""Pure task planning: which calls of a task run next, with which prompts.

`TaskState` is the task's whole progress. `next_calls` reads it and returns decisions;
the driver (executor.py) is the only code that mutates the state, through `start` and
`finish`. No awaits, no Ray, no gRPC here, so every decision is unit-testable.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from agents.program import LlmStep, Program
from orchestrator.domain import CallRecord, CallResult, Mode, Sampling, TaskSpec


@dataclass(slots=True, frozen=True)
class PlannedCall:
    """A call the driver should dispatch now."""

    call_id: str
    step: str
    branch: int  # 0-based branch within the step's fan-out
    prompt_token_ids: tuple[int, ...]
    sampling: Sampling
    after: tuple[str, ...]  # call_ids of the finished calls this one depends on
    answer: bool  # stream this call's output to the client


class _Status(enum.Enum):
    RUNNING = "running"
    DONE = "done"


@dataclass(slots=True)
class _Instance:
    step: str
    branch: int
    call_id: str
    status: _Status
    section: tuple[int, ...]  # instruction + output ids, once done
    record: CallRecord | None = None
    text: str = ""


@dataclass(slots=True, frozen=True)
class EncodedProgram:
    """A program's texts as token ids, encoded once per tokenizer."""

    program: Program
    prefix_head: tuple[int, ...]  # BOS + system text, before the user input
    # instruction ids per step and branch count: instruction texts can mention the branch.
    instructions: dict[tuple[str, int, int], tuple[int, ...]]


@dataclass(slots=True)
class TaskState:
    task_id: str
    spec: TaskSpec
    encoded: EncodedProgram
    prefix: tuple[int, ...]  # prefix_head + user input ids
    user_input_tokens: int
    instances: dict[str, list[_Instance]] = field(default_factory=dict)
    # Calls in flight, to bound per-task concurrency.
    running: int = 0
    answer_call_id: str | None = None

    @property
    def program(self) -> Program:
        return self.encoded.program

    def done(self) -> bool:
        """Every step of the program ran every one of its branches to the end."""
        return all(self.step_done(step.name) for step in self.program.steps)

    def step_done(self, name: str) -> bool:
        """Every branch of the step started and finished (a step with instances has
        its dependencies done, so its width is known)."""
        instances = self.instances.get(name, [])
        return (
            len(instances) > 0
            and len(instances) == branch_count(self, self.program.step(name))
            and all(i.status is _Status.DONE for i in instances)
        )

    def start(self, call: PlannedCall) -> None:
        self.instances.setdefault(call.step, []).append(
            _Instance(call.step, call.branch, call.call_id, _Status.RUNNING, ())
        )
        self.running += 1
        if call.answer:
            self.answer_call_id = call.call_id

    def finish(self, call: PlannedCall, result: CallResult, record: CallRecord) -> None:
        for instance in self.instances[call.step]:
            if instance.call_id == call.call_id:
                instance.status = _Status.DONE
                instance.record = record
                instance.text = result.text
                width = branch_count(self, self.program.step(call.step))
                instruction = self.encoded.instructions[(call.step, call.branch, width)]
                instance.section = instruction + result.token_ids
                self.running -= 1
                return
        raise KeyError(call.call_id)

    def records(self) -> list[CallRecord]:
        return [
            i.record
            for instances in self.instances.values()
            for i in instances
            if i.record is not None
        ]

    def answer_text(self) -> str:
        for instances in self.instances.values():
            for i in instances:
                if i.call_id == self.answer_call_id:
                    return i.text
        return ""

    def answer_record(self) -> CallRecord | None:
        for instances in self.instances.values():
            for i in instances:
                if i.call_id == self.answer_call_id:
                    return i.record
        return None


def step_max_tokens(spec: TaskSpec, step: LlmStep) -> int:
    tokens = dict(spec.step_max_tokens).get(step.name, step.max_tokens)
    if spec.max_tokens is not None:
        tokens = min(tokens, spec.max_tokens)
    return tokens


def branch_count(state: TaskState, step: LlmStep) -> int:
    """Fan-out width, decided once the step's dependencies are done."""
    if state.spec.mode is Mode.LIVE and step.fanout_from is not None:
        source = state.instances[step.fanout_from]
        lines = sum(1 for i in source for line in i.text.splitlines() if line.strip())
        return max(1, min(step.fanout_max, lines))
    return step.fanout


def call_sampling(spec: TaskSpec, step: LlmStep, branch: int) -> Sampling:
    ignore_eos = spec.ignore_eos if spec.ignore_eos is not None else spec.mode is Mode.SYNTHETIC
    seed = None
    if spec.seed is not None:
        # Distinct but reproducible per call: the same task seed gives the same outputs.
        digest = hashlib.blake2b(f"{spec.seed}/{step.name}/{branch}".encode(), digest_size=4)
        seed = int.from_bytes(digest.digest(), "big")
    return Sampling(
        max_tokens=step_max_tokens(spec, step),
        temperature=spec.temperature,
        top_p=spec.top_p,
        ignore_eos=ignore_eos,
        seed=seed,
    )


def next_calls(state: TaskState, max_running: int) -> list[PlannedCall]:
    """Calls whose dependencies are all done and that have not started, up to the bound
    on calls in flight. Pure: reads the state, returns decisions."""
    planned: list[PlannedCall] = []
    budget = max_running - state.running
    program = state.program
    for step in program.steps:
        if budget <= 0:
            break
        if not all(state.step_done(dep) for dep in step.after):
            continue
        width = branch_count(state, step)
        started = {i.branch for i in state.instances.get(step.name, [])}
        ancestors = program.ancestors(step.name)
        context = list(state.prefix)
        after: list[str] = []
        for name in ancestors:
            for instance in sorted(state.instances[name], key=lambda i: i.branch):
                context.extend(instance.section)
                after.append(instance.call_id)
        for branch in range(width):
            if branch in started or budget <= 0:
                continue
            instruction = state.encoded.instructions[(step.name, branch, width)]
            planned.append(
                PlannedCall(
                    call_id=f"{state.task_id}-{step.name}-{branch}",
                    step=step.name,
                    branch=branch,
                    prompt_token_ids=tuple(context) + instruction,
                    sampling=call_sampling(state.spec, step, branch),
                    # Direct dependencies only: the executed graph's edges.
                    after=tuple(i.call_id for dep in step.after for i in state.instances[dep]),
                    answer=step.answer,
                )
            )
            budget -= 1
    return planned


def widths(program: Program, mode: Mode) -> dict[str, tuple[int, ...]]:
    """Every fan-out width a step can take in a mode (for encoding instructions)."""
    out: dict[str, tuple[int, ...]] = {}
    for step in program.steps:
        if mode is Mode.LIVE and step.fanout_from is not None:
            out[step.name] = tuple(range(1, step.fanout_max + 1))
        else:
            out[step.name] = (step.fanout,)
    return out


def max_context_tokens(state: TaskState) -> int:
    """The longest prompt plus output any call of the task can reach, for rejecting
    inputs that cannot fit the model's context before any call runs."""
    program = state.program
    widest = {
        s.name: (s.fanout_max if state.spec.mode is Mode.LIVE and s.fanout_from else s.fanout)
        for s in program.steps
    }
    longest = 0
    for step in program.steps:
        total = len(state.prefix)
        for name in program.ancestors(step.name):
            ancestor = program.step(name)
            width = widest[name]
            inst = max(
                len(state.encoded.instructions[(name, b, w)])
                for w in widths(program, state.spec.mode)[name]
                for b in range(w)
            )
            total += width * (inst + step_max_tokens(state.spec, ancestor))
        inst_self = max(
            len(state.encoded.instructions[(step.name, b, w)])
            for w in widths(program, state.spec.mode)[step.name]
            for b in range(w)
        )
        total += inst_self + step_max_tokens(state.spec, step)
        longest = max(longest, total)
    return longest
