"""The agent-program DSL: a program is a graph of steps, described as frozen data.

A step runs once (or once per branch of a fan-out) when every step it comes `after` has
finished. Its prompt is the task's context: the system text and the user input, then,
for each finished ancestor step in program order, that step's instruction and output,
then the step's own instruction. So each call's prompt extends what earlier calls saw
and produced, which is what makes agent contexts share prefixes (and prefix caches hit).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.domain import AgentInfo, AgentStepInfo


class ProgramError(ValueError):
    """A program that cannot run; the message names the program and the step."""


@dataclass(slots=True, frozen=True)
class LlmStep:
    """One LLM call (per branch)."""

    name: str
    # Text appended to the context before this step's call. "{branch}" becomes the
    # 1-based branch number and "{branches}" the fan-out width.
    instruction: str
    max_tokens: int  # default output length; a task may override it per step
    after: tuple[str, ...] = ()
    # Branches in synthetic mode (1: no fan-out).
    fanout: int = 1
    # Live mode: one branch per non-empty line of this earlier step's output, clipped to
    # 1..fanout_max. None: the width is `fanout` in both modes.
    fanout_from: str | None = None
    fanout_max: int = 8
    # This step's output is the task's answer and streams to the client.
    answer: bool = False


@dataclass(slots=True, frozen=True)
class Program:
    name: str
    description: str
    system: str  # text that opens every prompt of the task
    steps: tuple[LlmStep, ...]

    def __post_init__(self) -> None:
        self.validate()

    def step(self, name: str) -> LlmStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise ProgramError(f"program {self.name!r}: no step named {name!r}")

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Transitive dependencies of a step, in program order."""
        wanted: set[str] = set()
        frontier = list(self.step(name).after)
        while frontier:
            dep = frontier.pop()
            if dep not in wanted:
                wanted.add(dep)
                frontier.extend(self.step(dep).after)
        return tuple(s.name for s in self.steps if s.name in wanted)

    def validate(self) -> None:
        where = f"program {self.name!r}"
        if not self.steps:
            raise ProgramError(f"{where}: has no steps")
        seen: set[str] = set()
        for step in self.steps:
            at = f"{where}, step {step.name!r}"
            if step.name in seen:
                raise ProgramError(f"{at}: duplicate step name")
            for dep in step.after:
                # Dependencies must name earlier steps: program order is a topological
                # order, so cycles cannot be written.
                if dep not in seen:
                    raise ProgramError(f"{at}: 'after' names {dep!r}, which is not an earlier step")
            if step.fanout_from is not None and step.fanout_from not in step.after:
                raise ProgramError(f"{at}: fanout_from {step.fanout_from!r} must be in 'after'")
            if step.max_tokens < 1:
                raise ProgramError(f"{at}: max_tokens must be >= 1, got {step.max_tokens}")
            if not 1 <= step.fanout <= step.fanout_max:
                raise ProgramError(
                    f"{at}: fanout must be in 1..fanout_max ({step.fanout_max}), got {step.fanout}"
                )
            seen.add(step.name)
        answers = [s for s in self.steps if s.answer]
        if len(answers) != 1:
            raise ProgramError(f"{where}: needs exactly one answer step, has {len(answers)}")
        answer = answers[0]
        if answer.fanout != 1 or answer.fanout_from is not None:
            raise ProgramError(f"{where}, step {answer.name!r}: the answer step cannot fan out")
        if any(answer.name in s.after for s in self.steps):
            raise ProgramError(
                f"{where}, step {answer.name!r}: no step may come after the answer step"
            )

    def expected_llm_calls(self) -> int:
        """Calls per task in synthetic mode."""
        return sum(s.fanout for s in self.steps)

    def info(self) -> AgentInfo:
        """The program as ListAgents and `inflection agents` describe it."""
        return AgentInfo(
            name=self.name,
            description=self.description,
            steps=tuple(
                AgentStepInfo(name=s.name, after=s.after, max_tokens=s.max_tokens, fanout=s.fanout)
                for s in self.steps
            ),
            expected_llm_calls=self.expected_llm_calls(),
        )
