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

The format is a set of pydantic models (`ProgramFile` and one per step kind) that convert
to the frozen agents.dsl objects; the dsl stays the runtime form and owns every limit (the
models read its constants). Pydantic's errors are reworded here and placed with the YAML
node marks. The JSON Schema in agents/schema/ is the models' `model_json_schema()`;
regenerate it with
`python -m agents.yaml_loader --schema > agents/schema/program.schema.json`, and check
program files with `python -m agents.yaml_loader FILE_OR_DIR...`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import re
import reprlib
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from agents import distributions
from agents.distributions import ABSURD, AnyDistribution
from agents.dsl import (
    MAX_BRANCHES,
    MAX_DEPTH,
    MAX_ITERATIONS,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_TIME_LIMIT_S,
    TEMPLATE_FIELDS,
    Join,
    JoinKind,
    Llm,
    Loop,
    Parallel,
    Program,
    ProgramError,
    Tool,
)
from agents.dsl import NAME_PATTERN as _DSL_NAME_PATTERN

# JSON Schema patterns search, so the schema's is anchored; the dsl's is matched whole.
NAME_PATTERN = f"^{_DSL_NAME_PATTERN}$"
_NAME = re.compile(_DSL_NAME_PATTERN)
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
    """Raised before pydantic runs; becomes a ProgramLoadError once the lines are known."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


def _fail(message: str, at: str = "") -> PydanticCustomError:
    """An error in our words; `at` extends the field path pydantic knows (".uniform")."""
    return PydanticCustomError("program", "{message}", {"message": message, "at": at})


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


def _dsl_default(cls: type[Any], attr: str) -> Any:
    """The dsl dataclass's default for an attribute, in the file's form (a distribution
    as its number, a join as its name), so the file's defaults are the dsl's."""
    item = next(f for f in dataclasses.fields(cls) if f.name == attr)
    factory = item.default_factory
    value = factory() if factory is not dataclasses.MISSING else item.default
    if isinstance(value, distributions.Constant):
        return value.value
    if isinstance(value, Join):
        return value.kind.value
    return value


# ---------------------------------------------------------------------------------------
# Field types: names, distributions.


def _check_name(raw: object) -> object:
    # fullmatch: a pattern's `$` alone would let a trailing newline through.
    if not isinstance(raw, str) or not _NAME.fullmatch(raw):
        raise _fail(
            "expected a lower_snake_case name (a lowercase letter, then lowercase letters, "
            f"digits or _, at most 64 characters), got {_show(raw)}"
        )
    return raw


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN), BeforeValidator(_check_name)]
_TEMPLATE_HELP = (
    "A template: {input} (the user's input), {output} (the previous llm output in this "
    "branch), {branch} and {branches} (inside a parallel), {iteration} (inside a loop). "
    "Known variables: " + ", ".join(sorted(TEMPLATE_FIELDS)) + "."
)
_KNOWN_DISTRIBUTIONS = "constant, uniform, normal, lognormal, empirical"


def _distribution_forms(minimum: float, prefix: str) -> Any:
    """The YAML forms of a distribution of values >= minimum, as models: they give the
    JSON Schema; `distributions.parse` (the owner of their rules) validates."""
    number = Annotated[float, Field(ge=minimum, le=ABSURD)]
    config = ConfigDict(extra="forbid")

    def form(name: str, doc: str, **fields: Any) -> Any:
        return create_model(f"{prefix}{name}", __config__=config, __doc__=doc, **fields)

    params = form(
        "NormalParams",
        "The parameters.",
        mean=(number, Field(description="The mean.")),
        std=(Annotated[float, Field(ge=0, le=ABSURD)], Field(description="The deviation.")),
        min=(number | None, Field(None, description="Draws below are clipped to it.")),
        max=(number | None, Field(None, description="Draws above are clipped to it.")),
    )
    log_params = form(
        "LognormalParams",
        "The parameters.",
        median=(Annotated[float, Field(gt=0, le=ABSURD)], Field(description="The median.")),
        sigma=(Annotated[float, Field(gt=0)], Field(description="The deviation of the log.")),
        max=(number, Field(description="Draws above are clipped to it (>= the median).")),
    )
    return Union[  # noqa: UP007 (a runtime union of runtime classes)
        number,
        form("Constant", "A constant.", constant=(number, Field(description="The value."))),
        form(
            "Uniform",
            "Uniform between low and high.",
            uniform=(tuple[number, number], Field(description="[low, high].")),
        ),
        form(
            "Normal",
            "A normal distribution, clipped.",
            normal=(params, Field(description="The mean, deviation and clipping bounds.")),
        ),
        form(
            "Lognormal",
            "A heavy-tailed lognormal distribution, clipped to max.",
            lognormal=(log_params, Field(description="The median, deviation and upper bound.")),
        ),
        form(
            "Empirical",
            "Uniform over observed values (e.g. lengths from a trace).",
            empirical=(list[number], Field(min_length=1, description="The observed values.")),
        ),
    ]


def _parse_distribution(minimum: float) -> Callable[[object, Any], AnyDistribution]:
    def parse(raw: object, _handler: Any) -> AnyDistribution:
        if isinstance(raw, bool) or not isinstance(raw, int | float | Mapping):
            # Checked here for a clearer message, and one that YAML 1.1's "1e5 is text" explains.
            hint = ""
            if isinstance(raw, str) and re.fullmatch(r"[-+]?[0-9.]+[eE][-+]?[0-9]+", raw.strip()):
                hint = " (YAML reads this as text: write 1.0e+5, not 1e5)"
            raise _fail(
                f"expected a number or a one-key mapping ({_KNOWN_DISTRIBUTIONS}), "
                f"got {_show(raw)}{hint}"
            )
        try:
            # "@" stands for the field's path, which only pydantic knows.
            return distributions.parse(
                dict(raw) if isinstance(raw, Mapping) else raw, "@", minimum=minimum
            )
        except distributions.DistributionError as exc:
            rest = str(exc).removeprefix("@")
            at, _, problem = rest.partition(": ")
            raise _fail(problem, at) from None
        except OverflowError:  # parse lets these through for huge integers
            raise _fail("a number is too large") from None
        except RecursionError:
            raise _fail("nested too deeply") from None

    return parse


if TYPE_CHECKING:
    Count = AnyDistribution
    Amount = AnyDistribution
else:
    # The declared type is the YAML forms (for the schema); the value is a dsl distribution.
    Count = Annotated[_distribution_forms(1.0, "Count"), WrapValidator(_parse_distribution(1.0))]
    Amount = Annotated[_distribution_forms(0.0, "Amount"), WrapValidator(_parse_distribution(0.0))]


# ---------------------------------------------------------------------------------------
# The format: one model per step kind and one for the file.


class _File(BaseModel):
    # strict: YAML's types are the user's intent ("yes" is not text, 2.5 not an integer).
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_default=True
    )


class LlmStep(_File):
    """One model call: its instruction is appended to the context, then its output."""

    llm: Name = Field(
        description="Makes this an llm step (one model call); the value is the step's name, "
        "unique in the program."
    )
    instruction: str = Field(
        description="Appended to the context before the call. " + _TEMPLATE_HELP
    )
    max_tokens: Count = Field(
        description="Output length in tokens: a number or a distribution (at least 1)."
    )
    temperature: float | None = Field(
        _dsl_default(Llm, "temperature"),
        ge=0.0,
        le=MAX_TEMPERATURE,
        description="Sampling temperature for this step; omitted: the task's temperature.",
    )

    def node(self) -> Llm:
        return Llm(self.llm, self.instruction, self.max_tokens, self.temperature)


class ToolStep(_File):
    """A tool call (registered with `use`, or simulated); its result is appended to the
    context."""

    tool: Name = Field(
        description="Makes this a tool step; the value is the step's name, unique in the program."
    )
    use: Name | None = Field(
        _dsl_default(Tool, "tool"),
        description="A tool registered in agents.tools (e.g. calculator, search, python) that "
        "runs on `argument`; omitted: a simulated tool (latency_s, result_tokens).",
    )
    argument: str = Field(
        _dsl_default(Tool, "argument"),
        description="What a registered tool receives. " + _TEMPLATE_HELP,
    )
    latency_s: Amount = Field(
        _dsl_default(Tool, "latency_s"),
        description="A simulated tool's latency in seconds: a number or a distribution.",
    )
    result_tokens: Amount = Field(
        _dsl_default(Tool, "result_tokens"),
        description="Tokens a simulated tool's result adds to the context: a number or a "
        "distribution.",
    )
    time_limit_s: float = Field(
        _dsl_default(Tool, "time_limit_s"),
        gt=0,
        le=MAX_TIME_LIMIT_S,
        description="A registered tool's time limit in seconds.",
    )

    @field_validator("use")
    @classmethod
    def _registered(cls, use: str | None, info: ValidationInfo) -> str | None:
        tools: Collection[str] | None = (info.context or {}).get("tools")
        if use is not None and tools is not None and use not in tools:
            known = ", ".join(sorted(tools)) or "none"
            raise _fail(f"unknown tool {use!r} ({_suggest(use, tools)}registered: {known})")
        return use

    def node(self) -> Tool:
        return Tool(
            self.tool,
            self.use,
            self.argument,
            self.latency_s,
            self.result_tokens,
            self.time_limit_s,
        )


_BEST_EXAMPLE = "{best: {llm: judge, instruction: ..., max_tokens: ...}}"
_STEP_EXAMPLE = "{llm: name, instruction: ..., max_tokens: ...}"
_KINDS = ("llm", "tool", "parallel", "loop")


def _kinds(raw: object) -> list[str]:
    return [kind for kind in _KINDS if kind in raw] if isinstance(raw, Mapping) else []


def _check_step(raw: object) -> object:
    if not isinstance(raw, Mapping):
        raise _fail(f"expected a step mapping such as {_STEP_EXAMPLE}, got {_show(raw)}")
    kinds = _kinds(raw)
    if not kinds:
        keys = ", ".join(_show(key) for key in list(raw)[:6]) or "none"
        first = next(iter(raw), "")
        raise _fail(
            "unknown step kind: a step needs one of the keys llm, tool, parallel or loop "
            f"({_suggest(first, _KINDS)}got keys: {keys})"
        )
    if len(kinds) > 1:
        raise _fail("a step has exactly one kind, got " + " and ".join(map(repr, kinds)))
    return dict(raw)


def _check_evaluator(raw: object) -> object:
    raw = _check_step(raw)
    kind = _kinds(raw)[0]
    if kind != "llm":
        raise _fail("expected an llm step here", f".{kind}")
    return raw


class BestJoin(_File):
    """best: an evaluator llm step reads every branch and picks one."""

    best: Annotated[LlmStep, BeforeValidator(_check_evaluator)] = Field(
        description="The evaluator call."
    )


def _check_join(raw: object) -> object:
    if raw in (JoinKind.CONCAT.value, JoinKind.VOTE.value):
        return raw
    if raw == JoinKind.BEST.value:
        raise _fail(f"'best' needs an evaluator step: join: {_BEST_EXAMPLE}")
    if isinstance(raw, Mapping) and list(raw) == [JoinKind.BEST.value]:
        return dict(raw)
    raise _fail(f"unknown join {_show(raw)} (expected concat, vote or {_BEST_EXAMPLE})")


# Union tags show in pydantic's error locations; they have a space, so no field has them.
_TAGS = frozenset({"llm step", "tool step", "parallel step", "loop step", "join name", "best join"})
_TAG_OWNER: dict[str, type[BaseModel]] = {
    "llm step": LlmStep,
    "tool step": ToolStep,
    "best join": BestJoin,
}
JoinField = Annotated[
    Union[  # noqa: UP007 (the tags need the Union form)
        Annotated[Literal["concat", "vote"], Tag("join name")],
        Annotated[BestJoin, Tag("best join")],
    ],
    Discriminator(lambda raw: "join name" if isinstance(raw, str) else "best join"),
    BeforeValidator(_check_join),
]


def _join_node(join: Literal["concat", "vote"] | BestJoin) -> Join:
    if isinstance(join, BestJoin):
        return Join(JoinKind.BEST, join.best.node())
    return Join(JoinKind(join))


class ParallelStep(_File):
    """Fan-out: branches run `steps` on copies of the context, then a join folds them
    back."""

    parallel: Name = Field(
        description="Makes this a fan-out step; the value is the step's name, unique in the "
        "program."
    )
    branches: Count = Field(
        description=f"How many branches run `steps` (at most {MAX_BRANCHES}): a number or a "
        "distribution."
    )
    branches_from_output: bool = Field(
        _dsl_default(Parallel, "branches_from_output"),
        description="Live mode: one branch per non-empty line of the previous llm output, "
        "clipped to 1..max_branches, instead of drawing `branches`.",
    )
    max_branches: int = Field(
        _dsl_default(Parallel, "max_branches"),
        ge=1,
        le=MAX_BRANCHES,
        description="The most branches branches_from_output may open.",
    )
    join: JoinField = Field(
        _dsl_default(Parallel, "join"),
        description="How branches fold back: concat (every branch's additions, in order), "
        "vote (the majority's), or {best: <llm step>} (an evaluator call picks one).",
    )
    steps: Steps = Field(
        min_length=1, description="The steps each branch runs on its own copy of the context."
    )

    def node(self) -> Parallel:
        return Parallel(
            self.parallel,
            tuple(step.node() for step in self.steps),
            self.branches,
            _join_node(self.join),
            self.branches_from_output,
            self.max_branches,
        )


class LoopStep(_File):
    """Repeats `steps`, at most max_iterations times."""

    loop: Name = Field(
        description="Makes this a loop step; the value is the step's name, unique in the program."
    )
    iterations: Count = Field(
        description="Synthetic mode: how many times `steps` run, a number or a distribution; "
        "it may not exceed max_iterations."
    )
    until: str | None = Field(
        _dsl_default(Loop, "until"),
        description="Live mode: stop once the last output contains this text.",
    )
    max_iterations: int = Field(
        _dsl_default(Loop, "max_iterations"),
        ge=1,
        le=MAX_ITERATIONS,
        description="The most iterations in any mode (loops are always bounded; at most "
        f"{MAX_ITERATIONS}).",
    )
    steps: Steps = Field(min_length=1, description="The steps each iteration runs.")

    def node(self) -> Loop:
        return Loop(
            self.loop,
            tuple(step.node() for step in self.steps),
            self.iterations,
            self.until,
            self.max_iterations,
        )


_TAG_OWNER.update({"parallel step": ParallelStep, "loop step": LoopStep})
_WHAT: dict[type[BaseModel], str] = {
    LlmStep: "an llm step",
    ToolStep: "a tool step",
    ParallelStep: "a parallel step",
    LoopStep: "a loop step",
    BestJoin: "a join",
}
Step = Annotated[
    Union[  # noqa: UP007 (the tags need the Union form)
        Annotated[LlmStep, Tag("llm step")],
        Annotated[ToolStep, Tag("tool step")],
        Annotated[ParallelStep, Tag("parallel step")],
        Annotated[LoopStep, Tag("loop step")],
    ],
    Discriminator(lambda raw: f"{_kinds(raw)[0]} step" if _kinds(raw) else None),
    BeforeValidator(_check_step),
]
Steps = list[Step]


def _answer_last(steps: list[LlmStep | ToolStep | ParallelStep | LoopStep]) -> Any:
    if steps and not isinstance(steps[-1], LlmStep):
        raise _fail(
            "the last top-level step must be an llm step (its output is the answer)",
            f"[{len(steps) - 1}]",
        )
    return steps


class ProgramFile(_File):
    """An agent program: steps (llm calls, tool calls, fan-outs, loops) run in order
    against one growing context. Loaded by agents.yaml_loader."""

    model_config = ConfigDict(title="Inflection agent program")

    name: Name = Field(
        description="The program's name (lower_snake_case); clients select the program by it."
    )
    description: str = Field("", description="What the program does, in one line.")
    source: str = Field(
        _dsl_default(Program, "source"),
        description="The published agent shape the program follows.",
    )
    system: str = Field("", description="System text that opens every prompt of the task.")
    steps: Annotated[Steps, AfterValidator(_answer_last)] = Field(
        min_length=1,
        description="The program's steps, run in order, each extending the task's context. "
        "The last one must be an llm step: its output is the answer.",
    )

    def program(self) -> Program:
        """The dsl program (whose own checks raise ProgramError)."""
        body = tuple(step.node() for step in self.steps)
        return Program(self.name, self.description, self.system, body, self.source)


for _model in (ParallelStep, LoopStep, BestJoin, ProgramFile):
    _model.model_rebuild()


# ---------------------------------------------------------------------------------------
# Pydantic's errors in the loader's words.


def _reworded(error: ErrorDetails) -> tuple[str, str]:
    """A pydantic error as (YAML field path, problem)."""
    kind, loc, raw = error["type"], error["loc"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    last = len(loc) - 1
    # The owner of the field that failed: the innermost tagged model (an evaluator's `best`
    # is an llm step without a tag).
    owner: type[BaseModel] = ProgramFile
    for i, part in enumerate(loc[:last]):
        if part in _TAG_OWNER:
            owner = _TAG_OWNER[str(part)]
        elif part == "best" and i == last - 1:
            owner = LlmStep
    parts = [
        p for i, p in enumerate(loc) if p not in _TAGS or (i == last and kind == "extra_forbidden")
    ]
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    key = parts[-1] if parts else ""
    what = _WHAT.get(owner, "a program")
    if kind == "program":
        return path + ctx["at"], ctx["message"]
    if kind == "missing":
        return path, f"missing required field {key!r} of {what}"
    if kind == "extra_forbidden":
        allowed = list(owner.model_fields)
        return path, (
            f"unknown key {_show(key)} for {what} ({_suggest(key, allowed)}"
            f"allowed: {', '.join(allowed)})"
        )
    if kind == "string_type":
        hint = " (quote text that YAML reads as another type)" if raw is not None else ""
        return path, f"expected text, got {_show(raw)}{hint}"
    if kind == "list_type" and key == "steps":
        return path, f"expected a list of steps, got {_show(raw)}"
    if kind == "too_short" and key == "steps":
        return path, "must contain at least one step"
    wording = {
        "bool_type": "expected true or false",
        "int_type": "expected an integer",
        "int_from_float": "expected an integer",
        "float_type": "expected a number",
        "finite_number": "must be a finite number",
        "greater_than": "must be positive",
        "greater_than_equal": f"must be at least {ctx.get('ge', 0):g}",
        "less_than_equal": f"must be at most {ctx.get('le', 0):g}",
    }
    return path, f"{wording.get(kind, error['msg'])}, got {_show(raw)}"


def _first(exc: ValidationError) -> ErrorDetails:
    """The error to report: pydantic's first (fields in the format's order), unless a
    mapping around it has an unknown key, which is reported first (the outermost one) as
    it often explains the other (a misspelt key is also a missing one)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    unknown = [
        e
        for e in errors
        if e["type"] == "extra_forbidden" and first["loc"][: len(e["loc"]) - 1] == e["loc"][:-1]
    ]
    return min(unknown, key=lambda e: len(e["loc"]), default=first)


def _check_tree(raw: Mapping[Any, Any]) -> None:
    """Bounds pydantic's work: YAML aliases can make a step contain itself or multiply
    steps exponentially, and nesting is bounded."""
    count = 0
    open_: set[int] = set()

    @contextlib.contextmanager
    def entering(container: object, at: str) -> Iterator[None]:
        if id(container) in open_:
            raise _Invalid(
                at,
                "a YAML alias makes this contain itself; programs are trees, so cycles are "
                "not allowed",
            )
        open_.add(id(container))
        try:
            yield
        finally:
            open_.discard(id(container))

    def steps(value: object, at: str, depth: int) -> None:
        if not isinstance(value, list):
            return
        if depth > MAX_DEPTH:
            raise _Invalid(at, f"steps nested deeper than {MAX_DEPTH} levels")
        with entering(value, at):
            for i, item in enumerate(value):
                step(item, f"{at}[{i}]", depth)

    def step(value: object, at: str, depth: int) -> None:
        nonlocal count
        if not isinstance(value, Mapping):
            return
        count += 1
        if count > MAX_STEPS:
            raise _Invalid(at, f"a program has at most {MAX_STEPS} steps")
        with entering(value, at):
            # Steps inside this one (and a join's evaluator) are one level deeper.
            steps(value.get("steps"), f"{at}.steps", depth + 1)
            join = value.get("join")
            if isinstance(join, Mapping):
                step(join.get("best"), f"{at}.join.best", depth + 1)

    steps(raw.get("steps"), "steps", 0)


def _read(raw: object, tools: Collection[str] | None) -> Program:
    """Raises _Invalid or ProgramError."""
    if not isinstance(raw, Mapping):
        raise _Invalid(
            "",
            f"the top level must be a mapping with at least `name` and `steps`, got {_show(raw)}",
        )
    _check_tree(raw)
    try:
        parsed = ProgramFile.model_validate(dict(raw), context={"tools": tools})
    except ValidationError as exc:
        raise _Invalid(*_reworded(_first(exc))) from None
    return parsed.program()


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
        return _read(data, tools)
    except _Invalid as exc:
        raise _located(source, exc.path, exc.problem, marks) from None
    except ProgramError as exc:
        path, problem = _from_dsl(exc)
        raise _located(source, path, problem, marks) from None


# ---------------------------------------------------------------------------------------
# The JSON Schema (draft 2020-12): the models' own.


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def program_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a program file, as committed in agents/schema/:
    `ProgramFile.model_json_schema()` with the definitions named in snake_case."""
    schema = ProgramFile.model_json_schema()
    # Definitions are named after the model classes; files and editors use snake_case.
    text = json.dumps(schema)
    for name in schema.get("$defs", {}):
        text = text.replace(f'"#/$defs/{name}"', f'"#/$defs/{_snake(name)}"')
    renamed: dict[str, Any] = json.loads(text)
    renamed["$defs"] = {_snake(k): v for k, v in renamed.get("$defs", {}).items()}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **renamed}


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
