"""The agent-program DSL: programs as trees of frozen nodes.

A program's body is a sequence of nodes run in order, each extending the task's context
(the growing token sequence that later prompts start with):

- `Llm`: one call. Its prompt is the context plus its rendered instruction; the
  instruction and the output are appended to the context.
- `Tool`: a tool step. A real tool (registered by name in `agents.tools`) runs on a
  rendered argument; a simulated one waits a drawn latency and yields a drawn number of
  result tokens. The result is appended to the context.
- `Parallel`: fan-out of N branches, each running `body` on a copy of the context,
  then a `Join` folds them back: concatenate every branch's additions, keep the
  majority's (vote), or keep the one an evaluator call picks (best).
- `Loop`: repeat `body`; in synthetic mode a drawn number of iterations, in live mode
  until the last output contains `until`, always at most `max_iterations`.

The program's answer is its last top-level node, which must be an `Llm`. Templates may
use {input} (the user's input), {branch} and {branches} (1-based, inside a Parallel),
{iteration} (1-based, inside a Loop) and {output} (the text of the previous Llm output
in this branch).
"""

from __future__ import annotations

import enum
import math
import re
import string
from dataclasses import dataclass, field

from agents.distributions import AnyDistribution, Constant
from agents.tools import BUILTIN_TOOLS

TEMPLATE_FIELDS = frozenset({"input", "branch", "branches", "iteration", "output"})
# Bounds that keep a program finite and a task's context plausible.
MAX_BRANCHES = 64
MAX_ITERATIONS = 64
MAX_DEPTH = 8
MAX_TEMPERATURE = 2.0
MAX_TIME_LIMIT_S = 3600.0  # a real tool's time limit
# YAML aliases can multiply steps exponentially in a few lines; no real program is near this.
MAX_STEPS = 1024
NAME_PATTERN = r"[a-z][a-z0-9_]{0,63}"  # step and program names (matched whole)
_NAME = re.compile(NAME_PATTERN)


class ProgramError(ValueError):
    """A program that cannot run; the message names the place (program, node path)."""


class JoinKind(enum.Enum):
    CONCAT = "concat"  # append every branch's additions, in branch order
    VOTE = "vote"  # keep the majority branch (by its last output text; ties: lowest index)
    BEST = "best"  # an evaluator call reads every branch and picks one


@dataclass(slots=True, frozen=True)
class Llm:
    name: str
    instruction: str  # template appended to the context before the call
    max_tokens: AnyDistribution
    temperature: float | None = None  # None: the task's temperature


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    # A tool registered in agents.tools (real), or None for a simulated tool.
    tool: str | None = None
    argument: str = "{output}"  # template: what a real tool receives
    latency_s: AnyDistribution = field(default_factory=lambda: Constant(0.0))
    result_tokens: AnyDistribution = field(default_factory=lambda: Constant(32.0))
    time_limit_s: float = 5.0  # a real tool's time limit


@dataclass(slots=True, frozen=True)
class Join:
    kind: JoinKind = JoinKind.CONCAT
    evaluator: Llm | None = None  # required for BEST, forbidden otherwise


@dataclass(slots=True, frozen=True)
class Parallel:
    name: str
    body: tuple[Node, ...]
    branches: AnyDistribution  # width in synthetic mode
    join: Join = field(default_factory=Join)
    # Live mode: one branch per non-empty line of the previous Llm output, clipped to
    # 1..max_branches. False: the width is drawn from `branches` in both modes.
    branches_from_output: bool = False
    max_branches: int = 8


@dataclass(slots=True, frozen=True)
class Loop:
    name: str
    body: tuple[Node, ...]
    iterations: AnyDistribution  # synthetic mode
    until: str | None = None  # live mode: stop once the last output contains this
    max_iterations: int = 8


Node = Llm | Tool | Parallel | Loop


@dataclass(slots=True, frozen=True)
class Program:
    name: str
    description: str
    system: str  # opens every prompt of the task
    body: tuple[Node, ...]
    source: str = ""  # the published shape it follows

    def __post_init__(self) -> None:
        validate(self)


def walk(nodes: tuple[Node, ...], path: str = "body") -> list[tuple[str, Node]]:
    """Every node with its path ("body[2].body[0]"), depth first, in program order."""
    out: list[tuple[str, Node]] = []
    for i, node in enumerate(nodes):
        at = f"{path}[{i}]"
        out.append((at, node))
        if isinstance(node, Parallel | Loop):
            out.extend(walk(node.body, f"{at}.body"))
        if isinstance(node, Parallel) and node.join.evaluator is not None:
            out.append((f"{at}.join.evaluator", node.join.evaluator))
    return out


def _check_template(where: str, text: str, allowed: frozenset[str]) -> None:
    try:
        names: set[str] = set()
        pending = [text]
        while pending:
            for _, name, spec, _ in string.Formatter().parse(pending.pop()):
                if name is not None:
                    names.add(name)
                if spec:
                    pending.append(spec)  # "{input:{width}}" nests a field in the spec
    except ValueError as exc:
        raise ProgramError(f"{where}: malformed template: {exc}") from None
    for name in sorted(names):
        if name not in TEMPLATE_FIELDS:
            raise ProgramError(
                f"{where}: unknown template variable {{{name}}} "
                f"(known: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})"
            )
        if name not in allowed:
            raise ProgramError(
                f"{where}: {{{name}}} is only defined inside a "
                f"{'Parallel' if name.startswith('branch') else 'Loop'}"
            )


def _validate_nodes(
    nodes: tuple[Node, ...], path: str, allowed: frozenset[str], depth: int, names: set[str]
) -> None:
    if depth > MAX_DEPTH:
        raise ProgramError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if not nodes:
        raise ProgramError(f"{path}: must contain at least one step")
    for i, node in enumerate(nodes):
        at = f"{path}[{i}] ({node.name})"
        if not _NAME.fullmatch(node.name):
            raise ProgramError(f"{at}: names are lower_snake_case, 1-64 characters")
        if node.name in names:
            raise ProgramError(f"{at}: duplicate step name {node.name!r}")
        names.add(node.name)
        if isinstance(node, Llm):
            _check_template(f"{at}.instruction", node.instruction, allowed)
            if node.max_tokens.upper() < 1:
                raise ProgramError(f"{at}.max_tokens: must allow at least 1 token")
            t = node.temperature
            if t is not None and not (math.isfinite(t) and 0.0 <= t <= MAX_TEMPERATURE):
                raise ProgramError(
                    f"{at}.temperature: must be between 0 and {MAX_TEMPERATURE:g}, got {t}"
                )
        elif isinstance(node, Tool):
            _check_template(f"{at}.argument", node.argument, allowed)
            if node.tool is not None and node.tool not in BUILTIN_TOOLS:
                raise ProgramError(
                    f"{at}.tool: unknown tool {node.tool!r} "
                    f"(known: {', '.join(sorted(BUILTIN_TOOLS))})"
                )
            limit = node.time_limit_s
            if not (math.isfinite(limit) and 0 < limit <= MAX_TIME_LIMIT_S):
                raise ProgramError(
                    f"{at}.time_limit_s: must be in (0, {MAX_TIME_LIMIT_S:g}], got {limit}"
                )
        elif isinstance(node, Parallel):
            if node.branches.upper() > MAX_BRANCHES:
                raise ProgramError(f"{at}.branches: at most {MAX_BRANCHES} branches")
            if not 1 <= node.max_branches <= MAX_BRANCHES:
                raise ProgramError(f"{at}.max_branches: must be between 1 and {MAX_BRANCHES}")
            if node.branches.upper() < 1:
                raise ProgramError(f"{at}.branches: must allow at least 1 branch")
            if node.branches.upper() > node.max_branches:
                raise ProgramError(
                    f"{at}.branches: can reach {node.branches.upper():g}, over "
                    f"max_branches ({node.max_branches})"
                )
            inner = allowed | {"branch", "branches"}
            _validate_nodes(node.body, f"{at}.body", inner, depth + 1, names)
            evaluator = node.join.evaluator
            if (node.join.kind is JoinKind.BEST) != (evaluator is not None):
                raise ProgramError(
                    f"{at}.join: an evaluator is required for 'best' and only allowed there"
                )
            if evaluator is not None:
                # The evaluator reads every branch, so it may say how many there were.
                judge_scope = allowed | {"branches"}
                _validate_nodes((evaluator,), f"{at}.join.evaluator", judge_scope, depth + 1, names)
        else:
            if node.max_iterations < 1 or node.max_iterations > MAX_ITERATIONS:
                raise ProgramError(
                    f"{at}.max_iterations: must be between 1 and {MAX_ITERATIONS} "
                    "(loops are always bounded)"
                )
            if node.iterations.upper() > node.max_iterations:
                raise ProgramError(
                    f"{at}.iterations: can reach {node.iterations.upper():g}, over "
                    f"max_iterations ({node.max_iterations})"
                )
            inner = allowed | {"iteration"}
            _validate_nodes(node.body, f"{at}.body", inner, depth + 1, names)


def validate(program: Program) -> None:
    where = f"program {program.name!r}"
    if not _NAME.fullmatch(program.name):
        raise ProgramError(f"{where}: names are lower_snake_case, 1-64 characters")
    try:
        _validate_nodes(program.body, "body", frozenset({"input", "output"}), 0, set())
    except ProgramError as exc:
        raise ProgramError(f"{where}, {exc}") from None
    if not isinstance(program.body[-1], Llm):
        raise ProgramError(f"{where}: the last top-level step must be an llm step (the answer)")
