"""User-defined agent programs in YAML: load them into `agents.dsl` programs, and describe
the format as a JSON Schema for editors.

A program file is one mapping. Each step is a mapping whose first key names its kind
(`llm`, `tool`, `parallel` or `loop`) and whose value is the step's name; the other keys
are the step's fields. Numbers that shape a workload (output lengths, fan-out widths, loop
iterations, simulated tool latencies and result sizes) are a constant or a distribution
(see `agents.distributions`). Templates may use {input}, {output}, {branch} and
{branches} (inside a parallel), and {iteration} (inside a loop). A complete example::

    name: my_react
    description: Thought -> tool -> observation loop, then sampled answers
    source: "Yao et al. 2023, ReAct"
    system: You are a helpful agent.
    steps:
      - llm: think                 # the key is the step kind, the value the step's name
        instruction: "Think about: {input}"
        max_tokens: {uniform: [32, 96]}
        temperature: 0.7           # optional; omitted: the task's temperature
      - loop: act
        iterations: {uniform: [2, 5]}    # synthetic mode
        until: "FINAL ANSWER"            # live mode
        max_iterations: 8                # every loop is bounded (at most 64)
        steps:
          - llm: thought
            instruction: "Thought {iteration}:"
            max_tokens: 48
          - tool: lookup
            use: search            # a tool registered in agents.tools; omit to simulate
            argument: "{output}"
            time_limit_s: 5
          - tool: observe          # a simulated tool: a drawn latency and result size
            latency_s: {lognormal: {median: 0.2, sigma: 0.5, max: 2}}
            result_tokens: {normal: {mean: 200, std: 50, min: 20, max: 400}}
      - parallel: samples
        branches: 5
        branches_from_output: false
        max_branches: 8
        join:                      # concat | vote | {best: <an llm step>}
          best: {llm: judge, instruction: "Pick the best answer:", max_tokens: 16}
        steps:
          - llm: draft
            instruction: "Answer {branch} of {branches}:"
            max_tokens: {empirical: [40, 64, 64, 120]}
      - llm: answer                # the last top-level step is an llm step: the answer
        instruction: "Answer:"
        max_tokens: 64

Every error is a `ProgramLoadError` whose message reads `file:line:column: field.path:
what is wrong`, whatever the input; had the loop above said `{uniform: [5, 2]}`:
`react.yaml:11:18: steps[1].iterations.uniform: low (5.0) must not exceed high (2.0)`.
Beyond what agents.dsl checks, the loader rejects unknown keys (suggesting the closest),
duplicate keys, YAML aliases that make a step contain itself, and more than MAX_STEPS
steps. Pass `tools=` (the registry's names) to check `use`.

The JSON Schema in agents/schema/ is generated from the same field tables the loader
reads with; regenerate it with
`python -m agents.yaml_loader --schema > agents/schema/program.schema.json`, and check
program files with `python -m agents.yaml_loader FILE_OR_DIR...`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import enum
import json
import math
import re
import reprlib
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents import distributions
from agents.dsl import (
    MAX_BRANCHES,
    MAX_DEPTH,
    MAX_ITERATIONS,
    TEMPLATE_FIELDS,
    Join,
    JoinKind,
    Llm,
    Loop,
    Node,
    Parallel,
    Program,
    ProgramError,
    Tool,
)

# The same rule as agents.dsl (a test keeps them equal); repeated here so that wrong names
# are reported at their YAML path and the schema can state the pattern.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
# YAML aliases can multiply steps exponentially in a few lines; no real program is near this.
MAX_STEPS = 1024
MAX_TEMPERATURE = 2.0
MAX_TIME_LIMIT_S = 3600.0
SCHEMA_PATH = Path(__file__).parent / "schema" / "program.schema.json"


class ProgramLoadError(ValueError):
    """A program file that cannot be loaded; the message names the file, the position when
    known, the field path and the problem."""

    def __init__(
        self,
        source: str,
        path: str,
        problem: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source = source  # the file name (or the name given with the text)
        self.path = path  # the field path, e.g. "steps[1].max_tokens.uniform"; "" for the file
        self.problem = problem
        self.line = line  # 1-based, None when the program came from data, not text
        self.column = column
        where = ":".join([source, *(str(n) for n in (line, column) if n is not None)])
        super().__init__(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")

    # Pickling re-calls the class with these arguments (errors cross Ray's process borders).
    def __reduce__(self) -> tuple[type[ProgramLoadError], tuple[Any, ...]]:
        return (type(self), (self.source, self.path, self.problem, self.line, self.column))


class _Invalid(Exception):
    """Raised while reading; becomes a ProgramLoadError once the file and lines are known."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


# ---------------------------------------------------------------------------------------
# The format, as tables: the reader and the JSON Schema are both driven by these.


class _Type(enum.Enum):
    NAME = "name"  # a lower_snake_case identifier
    TEXT = "text"
    TEMPLATE = "template"  # text with {variables}, checked by agents.dsl
    BOOLEAN = "boolean"
    INTEGER = "integer"
    NUMBER = "number"
    COUNT = "count"  # a distribution of values >= 1 (tokens, branches, iterations)
    AMOUNT = "amount"  # a distribution of values >= 0 (seconds, result tokens)
    STEPS = "steps"
    JOIN = "join"


class _Kind(enum.Enum):
    LLM = "llm"
    TOOL = "tool"
    PARALLEL = "parallel"
    LOOP = "loop"


@dataclass(slots=True, frozen=True)
class _Field:
    key: str  # the YAML key
    type: _Type
    description: str
    required: bool = False
    attr: str = ""  # the dsl dataclass attribute; "" means the same as `key`
    fallback: str | None = None  # a default the dsl lacks (optional top-level text)
    # Inclusive bounds for INTEGER and NUMBER; `positive` excludes zero.
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False

    @property
    def target(self) -> str:
        return self.attr or self.key


_TEMPLATE_HELP = (
    "A template: {input} (the user's input), {output} (the previous llm output in this "
    "branch), {branch} and {branches} (inside a parallel), {iteration} (inside a loop)."
)

_PROGRAM_FIELDS = (
    _Field(
        "name",
        _Type.NAME,
        "The program's name (lower_snake_case); clients select the program by it.",
        required=True,
    ),
    _Field(
        "description",
        _Type.TEXT,
        "What the program does, in one line.",
        fallback="",
    ),
    _Field("source", _Type.TEXT, "The published agent shape the program follows."),
    _Field(
        "system",
        _Type.TEXT,
        "System text that opens every prompt of the task.",
        fallback="",
    ),
    _Field(
        "steps",
        _Type.STEPS,
        "The program's steps, run in order, each extending the task's context. The last "
        "one must be an llm step: its output is the answer.",
        required=True,
        attr="body",
    ),
)

_STEP_FIELDS: dict[_Kind, tuple[_Field, ...]] = {
    _Kind.LLM: (
        _Field(
            "llm",
            _Type.NAME,
            "Makes this an llm step (one model call); the value is the step's name, "
            "unique in the program.",
            required=True,
            attr="name",
        ),
        _Field(
            "instruction",
            _Type.TEMPLATE,
            "Appended to the context before the call. " + _TEMPLATE_HELP,
            required=True,
        ),
        _Field(
            "max_tokens",
            _Type.COUNT,
            "Output length in tokens: a number or a distribution (at least 1).",
            required=True,
        ),
        _Field(
            "temperature",
            _Type.NUMBER,
            "Sampling temperature for this step; omitted: the task's temperature.",
            minimum=0.0,
            maximum=MAX_TEMPERATURE,
        ),
    ),
    _Kind.TOOL: (
        _Field(
            "tool",
            _Type.NAME,
            "Makes this a tool step; the value is the step's name, unique in the program.",
            required=True,
            attr="name",
        ),
        _Field(
            "use",
            _Type.NAME,
            "A tool registered in agents.tools (e.g. calculator, search, python) that runs "
            "on `argument`; omitted: a simulated tool (latency_s, result_tokens).",
            attr="tool",
        ),
        _Field(
            "argument",
            _Type.TEMPLATE,
            "What a registered tool receives. " + _TEMPLATE_HELP,
        ),
        _Field(
            "latency_s",
            _Type.AMOUNT,
            "A simulated tool's latency in seconds: a number or a distribution.",
        ),
        _Field(
            "result_tokens",
            _Type.AMOUNT,
            "Tokens a simulated tool's result adds to the context: a number or a distribution.",
        ),
        _Field(
            "time_limit_s",
            _Type.NUMBER,
            "A registered tool's time limit in seconds.",
            positive=True,
            minimum=0.0,
            maximum=MAX_TIME_LIMIT_S,
        ),
    ),
    _Kind.PARALLEL: (
        _Field(
            "parallel",
            _Type.NAME,
            "Makes this a fan-out step; the value is the step's name, unique in the program.",
            required=True,
            attr="name",
        ),
        _Field(
            "branches",
            _Type.COUNT,
            f"How many branches run `steps` (at most {MAX_BRANCHES}): a number or a distribution.",
            required=True,
        ),
        _Field(
            "branches_from_output",
            _Type.BOOLEAN,
            "Live mode: one branch per non-empty line of the previous llm output, clipped "
            "to 1..max_branches, instead of drawing `branches`.",
        ),
        _Field(
            "max_branches",
            _Type.INTEGER,
            "The most branches branches_from_output may open.",
            minimum=1,
            maximum=MAX_BRANCHES,
        ),
        _Field(
            "join",
            _Type.JOIN,
            "How branches fold back: concat (every branch's additions, in order), vote "
            "(the majority's), or {best: <llm step>} (an evaluator call picks one).",
        ),
        _Field(
            "steps",
            _Type.STEPS,
            "The steps each branch runs on its own copy of the context.",
            required=True,
            attr="body",
        ),
    ),
    _Kind.LOOP: (
        _Field(
            "loop",
            _Type.NAME,
            "Makes this a loop step; the value is the step's name, unique in the program.",
            required=True,
            attr="name",
        ),
        _Field(
            "iterations",
            _Type.COUNT,
            "Synthetic mode: how many times `steps` run, a number or a distribution; it "
            "may not exceed max_iterations.",
            required=True,
        ),
        _Field(
            "until",
            _Type.TEXT,
            "Live mode: stop once the last output contains this text.",
        ),
        _Field(
            "max_iterations",
            _Type.INTEGER,
            f"The most iterations in any mode (loops are always bounded; at most "
            f"{MAX_ITERATIONS}).",
            minimum=1,
            maximum=MAX_ITERATIONS,
        ),
        _Field(
            "steps",
            _Type.STEPS,
            "The steps each iteration runs.",
            required=True,
            attr="body",
        ),
    ),
}

_NODE_CLASS: dict[_Kind, type[Node]] = {
    _Kind.LLM: Llm,
    _Kind.TOOL: Tool,
    _Kind.PARALLEL: Parallel,
    _Kind.LOOP: Loop,
}
_KINDS_TEXT = "llm, tool, parallel or loop"
_A_STEP = {
    _Kind.LLM: "an llm step",
    _Kind.TOOL: "a tool step",
    _Kind.PARALLEL: "a parallel step",
    _Kind.LOOP: "a loop step",
}


# ---------------------------------------------------------------------------------------
# Describing user values in messages: short, and safe for any value (huge ints, cycles).

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large integer"
    if isinstance(value, list | tuple):
        return f"a list {_repr.repr(value)}"
    if isinstance(value, Mapping):
        return f"a mapping {_repr.repr(dict(value))}"
    return _repr.repr(value)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _suggest(key: object, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# ---------------------------------------------------------------------------------------
# Reading plain data (what YAML or JSON gives) into dsl nodes.


class _Reader:
    """One program's reading state: the step budget and the containers being read (a YAML
    alias can make a step contain itself)."""

    def __init__(self, tools: Collection[str] | None) -> None:
        self._tools = tools
        self._step_count = 0
        self._open: set[int] = set()

    def program(self, raw: object) -> Program:
        if not isinstance(raw, Mapping):
            raise _Invalid(
                "",
                "the top level must be a mapping with at least `name` and `steps`, "
                f"got {_show(raw)}",
            )
        kwargs = self._fields(raw, "", _PROGRAM_FIELDS, "a program", depth=0)
        body: tuple[Node, ...] = kwargs["body"]
        if not isinstance(body[-1], Llm):
            raise _Invalid(
                f"steps[{len(body) - 1}]",
                "the last top-level step must be an llm step (its output is the answer)",
            )
        return Program(**kwargs)

    def _fields(
        self,
        raw: Mapping[Any, Any],
        path: str,
        table: tuple[_Field, ...],
        what: str,
        depth: int,
    ) -> dict[str, Any]:
        allowed = [f.key for f in table]
        for key in raw:
            if key not in allowed:
                raise _Invalid(
                    _join(path, key),
                    f"unknown key {_show(key)} for {what} ({_suggest(key, allowed)}"
                    f"allowed: {', '.join(allowed)})",
                )
        kwargs: dict[str, Any] = {}
        for field in table:
            at = _join(path, field.key)
            if field.key in raw:
                kwargs[field.target] = self._value(field, raw[field.key], at, depth)
            elif field.required:
                raise _Invalid(at, f"missing required field {field.key!r} of {what}")
            elif field.fallback is not None:
                kwargs[field.target] = field.fallback
        return kwargs

    def _value(self, field: _Field, raw: object, at: str, depth: int) -> object:
        kind = field.type
        if kind is _Type.NAME:
            return self._name(field, raw, at)
        if kind in (_Type.TEXT, _Type.TEMPLATE):
            if not isinstance(raw, str):
                hint = " (quote text that YAML reads as another type)" if raw is not None else ""
                raise _Invalid(at, f"expected text, got {_show(raw)}{hint}")
            return raw
        if kind is _Type.BOOLEAN:
            if not isinstance(raw, bool):
                raise _Invalid(at, f"expected true or false, got {_show(raw)}")
            return raw
        if kind in (_Type.INTEGER, _Type.NUMBER):
            return _number(field, raw, at)
        if kind in (_Type.COUNT, _Type.AMOUNT):
            return _distribution(raw, at, minimum=1.0 if kind is _Type.COUNT else 0.0)
        if kind is _Type.STEPS:
            return self._steps(raw, at, depth)
        return self._join_value(raw, at, depth)

    def _name(self, field: _Field, raw: object, at: str) -> str:
        # fullmatch: the pattern's `$` alone would let a trailing newline through.
        if not isinstance(raw, str) or not _NAME.fullmatch(raw):
            raise _Invalid(
                at,
                "expected a lower_snake_case name (a lowercase letter, then lowercase "
                f"letters, digits or _, at most 64 characters), got {_show(raw)}",
            )
        if field.key == "use" and self._tools is not None and raw not in self._tools:
            known = ", ".join(sorted(self._tools)) or "none"
            raise _Invalid(
                at, f"unknown tool {raw!r} ({_suggest(raw, self._tools)}registered: {known})"
            )
        return raw

    def _steps(self, raw: object, at: str, depth: int) -> tuple[Node, ...]:
        if not isinstance(raw, list | tuple):
            raise _Invalid(at, f"expected a list of steps, got {_show(raw)}")
        if not raw:
            raise _Invalid(at, "must contain at least one step")
        if depth > MAX_DEPTH:
            raise _Invalid(at, f"steps nested deeper than {MAX_DEPTH} levels")
        with self._entering(raw, at):
            return tuple(self._step(item, f"{at}[{i}]", depth) for i, item in enumerate(raw))

    def _step(self, raw: object, at: str, depth: int, only: _Kind | None = None) -> Node:
        example = "{llm: name, instruction: ..., max_tokens: ...}"
        if not isinstance(raw, Mapping):
            raise _Invalid(at, f"expected a step mapping such as {example}, got {_show(raw)}")
        kinds = [kind for kind in _Kind if kind.value in raw]
        if not kinds:
            keys = ", ".join(_show(key) for key in list(raw)[:6]) or "none"
            first = next(iter(raw), "")
            raise _Invalid(
                at,
                f"unknown step kind: a step needs one of the keys {_KINDS_TEXT} "
                f"({_suggest(first, [k.value for k in _Kind])}got keys: {keys})",
            )
        if len(kinds) > 1:
            raise _Invalid(
                at,
                "a step has exactly one kind, got "
                + " and ".join(repr(kind.value) for kind in kinds),
            )
        kind = kinds[0]
        if only is not None and kind is not only:
            raise _Invalid(_join(at, kind.value), f"expected {_A_STEP[only]} here")
        self._step_count += 1
        if self._step_count > MAX_STEPS:
            raise _Invalid(at, f"a program has at most {MAX_STEPS} steps")
        with self._entering(raw, at):
            # Steps inside this one (and a join's evaluator) are one level deeper.
            kwargs = self._fields(raw, at, _STEP_FIELDS[kind], _A_STEP[kind], depth + 1)
        return _NODE_CLASS[kind](**kwargs)

    def _join_value(self, raw: object, at: str, depth: int) -> Join:
        best = "{best: {llm: judge, instruction: ..., max_tokens: ...}}"
        if isinstance(raw, str) and raw in (JoinKind.CONCAT.value, JoinKind.VOTE.value):
            return Join(JoinKind(raw))
        if isinstance(raw, str) and raw == JoinKind.BEST.value:
            raise _Invalid(at, f"'best' needs an evaluator step: join: {best}")
        if isinstance(raw, Mapping) and list(raw) == [JoinKind.BEST.value]:
            evaluator = self._step(raw[JoinKind.BEST.value], f"{at}.best", depth, _Kind.LLM)
            if not isinstance(evaluator, Llm):  # _step honours `only`; this narrows the type
                raise _Invalid(f"{at}.best", "expected an llm step here")
            return Join(JoinKind.BEST, evaluator)
        raise _Invalid(at, f"unknown join {_show(raw)} (expected concat, vote or {best})")

    @contextlib.contextmanager
    def _entering(self, container: object, at: str) -> Iterator[None]:
        if id(container) in self._open:
            raise _Invalid(
                at,
                "a YAML alias makes this contain itself; programs are trees, so cycles are "
                "not allowed",
            )
        self._open.add(id(container))
        try:
            yield
        finally:
            self._open.discard(id(container))


def _number(field: _Field, raw: object, at: str) -> int | float:
    integer = field.type is _Type.INTEGER
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (integer and isinstance(raw, float))
    ):
        expected = "an integer" if integer else "a number"
        raise _Invalid(at, f"expected {expected}, got {_show(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise _Invalid(at, f"must be a finite number, got {raw}")
    if field.positive and raw <= 0:
        raise _Invalid(at, f"must be positive, got {_show(raw)}")
    if field.minimum is not None and raw < field.minimum:
        raise _Invalid(at, f"must be at least {field.minimum:g}, got {_show(raw)}")
    if field.maximum is not None and raw > field.maximum:
        raise _Invalid(at, f"must be at most {field.maximum:g}, got {_show(raw)}")
    return raw if integer else float(raw)


def _distribution(raw: object, at: str, minimum: float) -> distributions.AnyDistribution:
    if isinstance(raw, bool) or not isinstance(raw, int | float | Mapping):
        # Checked here for a clearer message, and one that YAML 1.1's "1e5 is text" explains.
        hint = ""
        if isinstance(raw, str) and re.fullmatch(r"[-+]?[0-9.]+[eE][-+]?[0-9]+", raw.strip()):
            hint = " (YAML reads this as text: write 1.0e+5, not 1e5)"
        raise _Invalid(
            at,
            "expected a number or a one-key mapping (constant, uniform, normal, lognormal, "
            f"empirical), got {_show(raw)}{hint}",
        )
    try:
        # parse wants a dict (data given to load_program_data may be any Mapping).
        return distributions.parse(
            dict(raw) if isinstance(raw, Mapping) else raw, at, minimum=minimum
        )
    except distributions.DistributionError as exc:
        # parse's messages start with the (possibly longer) path they concern.
        message = str(exc)
        rest = message[len(at) :] if message.startswith(at) else ": " + message
        cut = rest.find(": ")
        raise _Invalid(at + rest[:cut], rest[cut + 2 :]) from None
    # parse lets these through for huge integers and deeply nested `constant`s.
    except OverflowError:
        raise _Invalid(at, "a number is too large") from None
    except RecursionError:
        raise _Invalid(at, "nested too deeply") from None


# ---------------------------------------------------------------------------------------
# YAML text: positions of every field path, and dsl messages mapped back to YAML paths.

_Marks = dict[str, tuple[int, int]]


def _position(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _parse_yaml(text: str, source: str) -> tuple[object, _Marks]:
    """The document's data and the (line, column) of each field path in it."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        marks = _collect_marks(root, source)
        return loader.construct_document(root), marks
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except ProgramLoadError:  # a duplicate key (a ValueError, like the next clause's)
        raise
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-02-30
        raise ProgramLoadError(source, "", f"invalid YAML value: {exc}") from None
    except RecursionError:
        raise ProgramLoadError(source, "", "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _yaml_error(source: str, exc: yaml.YAMLError) -> ProgramLoadError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        if mark is not None:
            return ProgramLoadError(
                source, "", f"invalid YAML: {problem}", mark.line + 1, mark.column + 1
            )
        return ProgramLoadError(source, "", f"invalid YAML: {problem}")
    return ProgramLoadError(source, "", f"invalid YAML: {exc}")


def _collect_marks(root: yaml.Node, source: str) -> _Marks:
    """Walks the composed nodes (before construction, which rewrites merge keys) to record
    positions and reject duplicate keys, which PyYAML would silently overwrite."""
    marks: _Marks = {"": _position(root)}
    seen: set[int] = set()
    stack: list[tuple[str, yaml.Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:  # aliases share nodes; recursive aliases would loop forever
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                at = _join(path, key.value)
                if key.value in first:
                    line, column = _position(key)
                    raise ProgramLoadError(
                        source,
                        at,
                        f"duplicate key {key.value!r} (first on line {first[key.value]})",
                        line,
                        column,
                    )
                first[key.value] = key.start_mark.line + 1
                marks.setdefault(at, _position(key))
                stack.append((at, value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                at = f"{path}[{i}]"
                marks.setdefault(at, _position(item))
                stack.append((at, item))
    return marks


def _located(source: str, path: str, problem: str, marks: _Marks) -> ProgramLoadError:
    """The error at the nearest enclosing path that has a position (a missing field is
    reported where its step starts)."""
    near = path
    while near not in marks and near:
        cut = max(near.rfind("."), near.rfind("["))
        near = near[:cut] if cut > 0 else ""
    line, column = marks.get(near, (None, None))
    return ProgramLoadError(source, path, problem, line, column)


_DSL_MESSAGE = re.compile(r"program '[^']*'(?:, (?P<path>.*?))?: (?P<problem>.*)", re.DOTALL)
_DSL_NODE = re.compile(r"body\[(\d+)\] \([^()]*\)")
_DSL_EVALUATOR = re.compile(r"\.join\.evaluator(?:\[0\] \([^()]*\))?")


def _from_dsl(exc: ProgramError) -> tuple[str, str]:
    """agents.dsl's "program 'p', body[1] (act).body[0] (x).instruction: problem" as the
    YAML path ("steps[1].steps[0].instruction") and the problem."""
    match = _DSL_MESSAGE.fullmatch(str(exc))
    if match is None:
        return "", str(exc)
    path = _DSL_EVALUATOR.sub(".join.best", match["path"] or "")
    return _DSL_NODE.sub(r"steps[\1]", path), match["problem"]


# ---------------------------------------------------------------------------------------
# The public API.


def load_program_data(
    data: object, source_name: str = "<data>", *, tools: Collection[str] | None = None
) -> Program:
    """A program from already-parsed data (YAML or JSON), e.g. one sent in a request.

    `tools`, when given, are the registered tool names `use` may name."""
    return _load(data, source_name, {}, tools)


def load_program_text(
    text: str, source_name: str = "<string>", *, tools: Collection[str] | None = None
) -> Program:
    """A program from YAML text; `source_name` names it in errors."""
    data, marks = _parse_yaml(text, source_name)
    return _load(data, source_name, marks, tools)


def load_program(path: Path, *, tools: Collection[str] | None = None) -> Program:
    """A program from a YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProgramLoadError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProgramLoadError(str(path), "", f"not UTF-8 text: {exc.reason}") from None
    return load_program_text(text, str(path), tools=tools)


def load_programs(
    paths: Iterable[Path],
    *,
    tools: Collection[str] | None = None,
    reserved: Collection[str] = (),
) -> dict[str, Program]:
    """Programs by name from files; a directory contributes its *.yaml and *.yml files in
    name order. Two programs with one name are an error naming both files, and so is a
    `reserved` name (the built-in programs')."""
    programs: dict[str, Program] = {}
    origins: dict[str, Path] = {}
    for path in _expand(paths):
        program = load_program(path, tools=tools)
        if program.name in reserved:
            raise ProgramLoadError(
                str(path), "name", f"{program.name!r} is the name of a built-in program"
            )
        if program.name in origins:
            raise ProgramLoadError(
                str(path),
                "name",
                f"program {program.name!r} is already defined in {origins[program.name]}",
            )
        programs[program.name] = program
        origins[program.name] = path
    return programs


def _expand(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def _load(data: object, source: str, marks: _Marks, tools: Collection[str] | None) -> Program:
    try:
        return _Reader(tools).program(data)
    except _Invalid as exc:
        raise _located(source, exc.path, exc.problem, marks) from None
    except ProgramError as exc:
        path, problem = _from_dsl(exc)
        raise _located(source, path, problem, marks) from None


# ---------------------------------------------------------------------------------------
# The JSON Schema (draft 2020-12), generated from the tables above.


def _dsl_default(kind: _Kind | None, attr: str) -> object:
    """The dsl's default for an attribute, as JSON; None when it has none."""
    cls = Program if kind is None else _NODE_CLASS[kind]
    for item in dataclasses.fields(cls):
        if item.name != attr:
            continue
        if item.default is not dataclasses.MISSING:
            value: object = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
        else:
            return None
        if isinstance(value, distributions.Constant):
            return value.value
        if isinstance(value, Join):
            return value.kind.value
        return value
    return None


def _distribution_schema(minimum: float, description: str) -> dict[str, Any]:
    number = {"type": "number", "minimum": minimum, "maximum": distributions.ABSURD}

    def variant(key: str, value: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "type": "object",
            "description": description,
            "properties": {key: value},
            "required": [key],
            "additionalProperties": False,
        }

    def params(fields: dict[str, tuple[dict[str, Any], str]], required: list[str]) -> Any:
        return {
            "type": "object",
            "description": "The parameters.",
            "properties": {k: {**schema, "description": d} for k, (schema, d) in fields.items()},
            "required": required,
            "additionalProperties": False,
        }

    return {
        "description": description,
        "oneOf": [
            {**number, "description": "A constant."},
            variant("constant", {**number, "description": "The value."}, "A constant."),
            variant(
                "uniform",
                {
                    "type": "array",
                    "description": "[low, high].",
                    "prefixItems": [number, number],
                    "minItems": 2,
                    "maxItems": 2,
                },
                "Uniform between low and high.",
            ),
            variant(
                "normal",
                params(
                    {
                        "mean": (number, "The mean."),
                        "std": ({**number, "minimum": 0}, "The standard deviation."),
                        "min": (number, "Draws below are clipped to it (default: the minimum)."),
                        "max": (number, "Draws above are clipped to it (default: mean + 4 std)."),
                    },
                    ["mean", "std"],
                ),
                "A normal distribution, clipped to [min, max].",
            ),
            variant(
                "lognormal",
                params(
                    {
                        "median": ({**number, "exclusiveMinimum": 0}, "The median."),
                        "sigma": (
                            {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
                            "The standard deviation of the logarithm.",
                        ),
                        "max": (number, "Draws above are clipped to it (at least the median)."),
                    },
                    ["median", "sigma", "max"],
                ),
                "A heavy-tailed lognormal distribution, clipped to max.",
            ),
            variant(
                "empirical",
                {
                    "type": "array",
                    "description": "The observed values.",
                    "items": number,
                    "minItems": 1,
                },
                "Uniform over observed values (e.g. lengths from a trace).",
            ),
        ],
    }


def _field_schema(field: _Field, kind: _Kind | None) -> dict[str, Any]:
    refs = {
        _Type.NAME: "#/$defs/name",
        _Type.TEMPLATE: "#/$defs/template",
        _Type.COUNT: "#/$defs/count",
        _Type.AMOUNT: "#/$defs/amount",
        _Type.STEPS: "#/$defs/steps",
        _Type.JOIN: "#/$defs/join",
    }
    schema: dict[str, Any]
    if field.type in refs:
        schema = {"$ref": refs[field.type]}
    elif field.type is _Type.TEXT:
        schema = {"type": "string"}
    elif field.type is _Type.BOOLEAN:
        schema = {"type": "boolean"}
    else:
        schema = {"type": "integer" if field.type is _Type.INTEGER else "number"}
        if field.positive:
            schema["exclusiveMinimum"] = field.minimum
        elif field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
    schema["description"] = field.description
    default = field.fallback if field.fallback is not None else _dsl_default(kind, field.target)
    if not field.required and default is not None:
        schema["default"] = default
    return schema


def _object_schema(
    table: tuple[_Field, ...], kind: _Kind | None, description: str
) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {field.key: _field_schema(field, kind) for field in table},
        "required": [field.key for field in table if field.required],
        "additionalProperties": False,
    }


def program_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a program file, as committed in agents/schema/."""
    step_descriptions = {
        _Kind.LLM: "One model call: its instruction is appended to the context, then its output.",
        _Kind.TOOL: "A tool call (registered with `use`, or simulated); its result is "
        "appended to the context.",
        _Kind.PARALLEL: "Fan-out: branches run `steps` on copies of the context, then a join "
        "folds them back.",
        _Kind.LOOP: "Repeats `steps`, at most max_iterations times.",
    }
    defs: dict[str, Any] = {
        "name": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "lower_snake_case, 1-64 characters, unique in the program.",
        },
        "template": {
            "type": "string",
            "description": _TEMPLATE_HELP
            + " Known variables: "
            + ", ".join(sorted(TEMPLATE_FIELDS))
            + ".",
        },
        "count": _distribution_schema(1.0, "A number or a distribution of values of at least 1."),
        "amount": _distribution_schema(0.0, "A number or a distribution of values of at least 0."),
        "steps": {
            "type": "array",
            "description": "Steps run in order.",
            "items": {"$ref": "#/$defs/step"},
            "minItems": 1,
        },
        "step": {
            "description": "One step; its first key names its kind: "
            + ", ".join(kind.value for kind in _Kind)
            + ".",
            "oneOf": [{"$ref": f"#/$defs/{kind.value}_step"} for kind in _Kind],
        },
        "join": {
            "description": "How a parallel step's branches fold back.",
            "oneOf": [
                {
                    "enum": [JoinKind.CONCAT.value, JoinKind.VOTE.value],
                    "description": "concat: every branch's additions in branch order; "
                    "vote: the majority branch's (by its last output).",
                },
                {
                    "type": "object",
                    "description": "best: an evaluator llm step reads every branch and picks one.",
                    "properties": {
                        "best": {
                            "$ref": "#/$defs/llm_step",
                            "description": "The evaluator call.",
                        }
                    },
                    "required": ["best"],
                    "additionalProperties": False,
                },
            ],
        },
    }
    for kind in _Kind:
        defs[f"{kind.value}_step"] = _object_schema(
            _STEP_FIELDS[kind], kind, step_descriptions[kind]
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Inflection agent program",
        **_object_schema(
            _PROGRAM_FIELDS,
            None,
            "An agent program: steps (llm calls, tool calls, fan-outs, loops) run in "
            "order against one growing context. Loaded by agents.yaml_loader.",
        ),
        "$defs": defs,
    }


def schema_text() -> str:
    """program_schema() as the committed file's text."""
    return json.dumps(program_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Check program files, or print the JSON Schema."""
    parser = argparse.ArgumentParser(prog="python -m agents.yaml_loader", description=main.__doc__)
    parser.add_argument("--schema", action="store_true", help="print the JSON Schema")
    parser.add_argument("paths", nargs="*", type=Path, help="program files or directories")
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(schema_text())
        return 0
    try:
        programs = load_programs(args.paths)
    except ProgramLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, program in programs.items():
        print(f"{name}: {len(program.body)} top-level steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
