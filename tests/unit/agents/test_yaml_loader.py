"""User-defined programs in YAML: a full example becomes the right dsl tree, every kind of
bad input is reported with the file, the field path and the problem, no input crashes
the loader, and the committed JSON Schema matches the loader's format."""

from __future__ import annotations

import json
import pickle
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import dsl, yaml_loader
from agents.distributions import Constant, Empirical, LogNormal, NormalClipped, Uniform
from agents.dsl import Join, JoinKind, Llm, Loop, Parallel, Program, Tool
from agents.yaml_loader import (
    ProgramLoadError,
    load_program,
    load_program_data,
    load_program_text,
    load_programs,
    program_schema,
)

DATA = Path(__file__).parent / "data"
REACT = DATA / "react.yaml"

MINIMAL = """\
name: tiny
steps:
  - llm: answer
    instruction: "Answer: {input}"
    max_tokens: 8
"""


def _error(text: str, **kwargs: Any) -> ProgramLoadError:
    with pytest.raises(ProgramLoadError) as info:
        load_program_text(text, "prog.yaml", **kwargs)
    return info.value


def _program(*steps: str) -> str:
    """A program whose steps are the given YAML snippets (each a list item) plus an answer."""
    body = "".join(textwrap.indent(textwrap.dedent(step).strip() + "\n", "  ") for step in steps)
    return f"name: prog\nsteps:\n{body}  - llm: answer\n    instruction: A\n    max_tokens: 4\n"


# --- a valid program -------------------------------------------------------------------


def test_full_example_becomes_the_dsl_tree() -> None:
    program = load_program(REACT)
    assert program.name == "my_react"
    assert program.source == "Yao et al. 2023, ReAct"
    assert program.system == "You are a helpful agent."
    think, act, samples, answer = program.body
    assert think == Llm("think", "Think about: {input}", Uniform(32, 96), temperature=0.7)
    assert isinstance(act, Loop)
    assert (act.name, act.iterations, act.until, act.max_iterations) == (
        "act",
        Uniform(2, 5),
        "FINAL ANSWER",
        8,
    )
    thought, lookup, observe = act.body
    assert thought == Llm("thought", "Thought {iteration}:", Constant(48))
    assert lookup == Tool("lookup", tool="search", argument="{output}", time_limit_s=5.0)
    assert observe == Tool(
        "observe",
        latency_s=LogNormal(0.2, 0.5, 2.0),
        result_tokens=NormalClipped(200, 50, 20, 400),
    )
    assert isinstance(samples, Parallel)
    assert samples.branches == Constant(5)
    assert (samples.branches_from_output, samples.max_branches) == (False, 8)
    assert samples.join == Join(JoinKind.BEST, Llm("judge", "Pick the best answer:", Constant(16)))
    assert samples.body == (
        Llm("draft", "Answer {branch} of {branches}:", Empirical((40, 64, 64, 120))),
    )
    assert answer == Llm("answer", "Answer:", Constant(64))


def test_docstring_example_is_the_fixture() -> None:
    """The documented example is the one the tests load, so the docs cannot rot."""
    doc = yaml_loader.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\nEvery error", 1)[0]
    assert textwrap.dedent(block) + "\n" == REACT.read_text()


def test_defaults_come_from_the_dsl() -> None:
    text = _program(
        "- tool: sim",
        """
            - parallel: fan
              branches: 2
              steps:
                - llm: w
                  instruction: "{branch}"
                  max_tokens: 4
            """,
        """
            - loop: again
              iterations: 3
              steps:
                - llm: x
                  instruction: "{iteration}"
                  max_tokens: 4
            """,
    )
    assert _schema_errors(yaml.safe_load(text)) == []
    program = load_program_text(text, "defaults.yaml")
    assert (program.description, program.system, program.source) == ("", "", "")
    sim, fan, again, _ = program.body
    assert sim == Tool("sim")
    assert isinstance(fan, Parallel) and fan.join == Join(JoinKind.CONCAT)
    assert fan.max_branches == 8 and not fan.branches_from_output
    assert isinstance(again, Loop) and again.max_iterations == 8 and again.until is None


def test_vote_join_and_yaml_merge_keys() -> None:
    text = _program(
        """
            - parallel: fan
              branches: {uniform: [2, 4]}
              join: vote
              steps:
                - &worker {llm: w, instruction: "try {branch}", max_tokens: 4}
                - {<<: *worker, llm: w2}
            """
    )
    assert _schema_errors(yaml.safe_load(text)) == []
    program = load_program_text(text, "merge.yaml")
    fan = program.body[0]
    assert isinstance(fan, Parallel) and fan.join == Join(JoinKind.VOTE)
    assert [node.name for node in fan.body] == ["w", "w2"]


def test_load_programs_by_name_from_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("tiny", "second"))
    (tmp_path / "a.yml").write_text(MINIMAL)
    (tmp_path / "notes.txt").write_text("not a program")
    programs = load_programs([REACT, tmp_path])
    assert list(programs) == ["my_react", "tiny", "second"]
    assert all(isinstance(p, Program) for p in programs.values())


def test_load_programs_rejects_one_name_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    with pytest.raises(ProgramLoadError) as info:
        load_programs([tmp_path])
    message = str(info.value)
    assert "b.yaml: name: program 'tiny' is already defined in" in message
    assert "a.yaml" in message


def test_registered_tools_are_checked_when_given() -> None:
    text = _program("- {tool: t, use: serch}")
    # The dsl knows the built-in tools, so even without a registry given it refuses.
    assert "unknown tool 'serch'" in str(_error(text))
    error = _error(text, tools={"calculator", "search", "python"})
    assert error.path == "steps[0].use"
    assert "unknown tool 'serch' (did you mean 'search'?" in str(error)


def test_error_pickles_with_its_fields() -> None:
    error = _error("name: x\n")
    again = pickle.loads(pickle.dumps(error))
    assert (again.source, again.path, str(again)) == (error.source, error.path, str(error))


# --- one test per class of bad input ---------------------------------------------------


def _check(error: ProgramLoadError, path: str, phrase: str, line: int | None = None) -> None:
    message = str(error)
    assert message.startswith("prog.yaml:"), message
    assert error.path == path, message
    assert f" {path}: " in message, message
    assert phrase in message, message
    if line is not None:
        assert error.line == line, message


def test_invalid_yaml_names_line_and_column() -> None:
    error = _error("name: x\nsteps:\n  - llm: a\n   bad: [\n")
    assert str(error).startswith("prog.yaml:4:"), error
    assert "invalid YAML" in str(error)
    assert error.line == 4 and error.column is not None


def test_invalid_yaml_values_and_duplicate_keys() -> None:
    assert "invalid YAML value" in str(_error("name: 2024-02-30\n"))
    assert "expected a single document" in str(_error("name: a\n---\nname: b\n"))
    _check(_error(MINIMAL + "name: again\n"), "name", "duplicate key 'name' (first on line 1)", 6)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("- llm: a\n", "got a list"),
        ("just text\n", "got 'just text'"),
        ("", "got null"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, phrase: str) -> None:
    error = _error(text)
    assert error.path == ""
    assert str(error).startswith("prog.yaml:")
    assert "the top level must be a mapping" in str(error) and phrase in str(error)


def test_unknown_keys_list_the_allowed_ones() -> None:
    _check(
        _error(MINIMAL + "author: me\n"),
        "author",
        "unknown key 'author' for a program (allowed: name, description, source, system, steps)",
        6,
    )
    error = _error(_program("- {llm: a, instruction: x, max_token: 4}"))
    _check(error, "steps[0].max_token", "did you mean 'max_tokens'?", 3)
    assert "allowed: llm, instruction, max_tokens, temperature" in str(error)


def test_unknown_step_kinds_list_the_kinds() -> None:
    error = _error(_program("- {agent: a, instruction: x}"))
    _check(error, "steps[0]", "unknown step kind", 3)
    assert "llm, tool, parallel or loop" in str(error)
    _check(_error(_program("- think")), "steps[0]", "expected a step mapping")
    _check(
        _error(_program("- {llm: a, tool: b}")),
        "steps[0]",
        "a step has exactly one kind, got 'llm' and 'tool'",
    )


def test_missing_required_fields() -> None:
    _check(_error("name: x\n"), "steps", "missing required field 'steps' of a program")
    _check(
        _error(_program("- {llm: a, instruction: x}")),
        "steps[0].max_tokens",
        "missing required field 'max_tokens' of an llm step",
        3,
    )
    error = _error(_program("- {loop: l, steps: [{llm: a, instruction: x, max_tokens: 2}]}"))
    _check(error, "steps[0].iterations", "missing required field 'iterations' of a loop step")
    _check(
        _error(_program("- {loop: l, iterations: 2, steps: []}")),
        "steps[0].steps",
        "at least one step",
    )


@pytest.mark.parametrize(
    ("step", "path", "phrase"),
    [
        ("{llm: a, instruction: 3, max_tokens: 4}", "steps[0].instruction", "expected text, got 3"),
        ("{llm: A, instruction: x, max_tokens: 4}", "steps[0].llm", "lower_snake_case name"),
        ('{llm: "a\\n", instruction: x, max_tokens: 4}', "steps[0].llm", "lower_snake_case name"),
        (
            "{llm: a, instruction: x, max_tokens: 4, temperature: hot}",
            "steps[0].temperature",
            "expected a number, got 'hot'",
        ),
        (
            "{llm: a, instruction: x, max_tokens: 4, temperature: 9}",
            "steps[0].temperature",
            "must be at most 2",
        ),
        ("{tool: t, time_limit_s: 0}", "steps[0].time_limit_s", "must be positive"),
        ("{tool: t, time_limit_s: .nan}", "steps[0].time_limit_s", "finite"),
        (
            "{parallel: p, branches: 2, max_branches: 2.5, steps: [{tool: t}]}",
            "steps[0].max_branches",
            "expected an integer, got 2.5",
        ),
        (
            "{parallel: p, branches: 2, branches_from_output: yes please, steps: [{tool: t}]}",
            "steps[0].branches_from_output",
            "expected true or false",
        ),
        (
            "{parallel: p, branches: 2, join: best, steps: [{tool: t}]}",
            "steps[0].join",
            "needs an evaluator",
        ),
        (
            "{parallel: p, branches: 2, join: max, steps: [{tool: t}]}",
            "steps[0].join",
            "unknown join 'max'",
        ),
        (
            "{parallel: p, branches: 2, join: {best: {tool: j}}, steps: [{tool: t}]}",
            "steps[0].join.best.tool",
            "expected an llm step here",
        ),
        ("{loop: l, iterations: 2, until: yes, steps: [{tool: t}]}", "steps[0].until", "quote"),
        (
            "{loop: l, iterations: 2, steps: {tool: t}}",
            "steps[0].steps",
            "expected a list of steps",
        ),
        ("{llm: a, instruction: x, max_tokens: 1e5}", "steps[0].max_tokens", "write 1.0e+5"),
        ("{llm: a, instruction: x, max_tokens: true}", "steps[0].max_tokens", "got true"),
    ],
)
def test_wrong_types_and_values(step: str, path: str, phrase: str) -> None:
    _check(_error(_program(f"- {step}")), path, phrase, 3)


def test_cycles_duplicate_names_and_self_containing_aliases() -> None:
    # A tree format cannot express a cycle except through a name used twice (which
    # agents.dsl rejects; the error is mapped to the YAML path) or a recursive alias.
    nested = "{parallel: a, branches: 2, steps: [{llm: a, instruction: x, max_tokens: 2}]}"
    _check(_error(_program(f"- {nested}")), "steps[0].steps[0]", "duplicate step name 'a'", 3)
    recursive = "name: x\nsteps: &body\n  - {loop: l, iterations: 2, steps: *body}\n"
    _check(_error(recursive), "steps[0].steps", "cycles are not allowed", 3)
    self_step = "name: x\nsteps:\n  - &s {parallel: p, branches: 2, steps: [*s]}\n"
    _check(_error(self_step), "steps[0].steps[0]", "cycles are not allowed", 3)


def test_aliases_cannot_recurse_or_multiply_without_bound() -> None:
    _check(
        _error(_program("- {llm: a, instruction: x, max_tokens: &m {constant: *m}}")),
        "steps[0].max_tokens.constant",
        "must be a number",
    )
    _check(_error("name: &n [*n]\nsteps: []\n"), "name", "lower_snake_case name", 1)
    levels = ["  - &l0 {loop: l0, iterations: 1, steps: [" + ", ".join(["{tool: t}"] * 8) + "]}"]
    for i in range(1, 4):
        refs = ", ".join([f"*l{i - 1}"] * 8)
        levels.append(f"  - &l{i} {{loop: l{i}, iterations: 1, steps: [{refs}]}}")
    error = _error("name: x\nsteps:\n" + "\n".join(levels) + "\n")
    assert "at most 1024 steps" in str(error)


def test_loops_are_bounded() -> None:
    body = "steps: [{llm: x, instruction: x, max_tokens: 2}]"
    _check(
        _error(_program(f"- {{loop: l, iterations: {{uniform: [2, 12]}}, {body}}}")),
        "steps[0].iterations",
        "can reach 12, over max_iterations (8)",
        3,
    )
    _check(
        _error(_program(f"- {{loop: l, iterations: 2, max_iterations: 100, {body}}}")),
        "steps[0].max_iterations",
        "must be at most 64",
    )
    _check(
        _error(_program(f"- {{loop: l, iterations: 2, max_iterations: 0, {body}}}")),
        "steps[0].max_iterations",
        "must be at least 1",
    )


def test_template_variables_are_checked_where_they_are_used() -> None:
    _check(
        _error(_program("- {llm: a, instruction: 'say {answer}', max_tokens: 2}")),
        "steps[0].instruction",
        "unknown template variable {answer}",
        3,
    )
    _check(
        _error(_program("- {llm: a, instruction: 'step {iteration}', max_tokens: 2}")),
        "steps[0].instruction",
        "{iteration} is only defined inside a Loop",
    )
    judge = "{best: {llm: j, instruction: 'pick {branch}', max_tokens: 2}}"
    _check(
        _error(_program(f"- {{parallel: p, branches: 2, join: {judge}, steps: [{{tool: t}}]}}")),
        "steps[0].join.best.instruction",
        "{branch} is only defined inside a Parallel",
    )
    _check(
        _error(_program("- {tool: t, argument: 'x {'}")),
        "steps[0].argument",
        "malformed template",
    )


@pytest.mark.parametrize(
    ("max_tokens", "path", "phrase"),
    [
        ("-5", "steps[0].steps[0].max_tokens", "value must be >= 1"),
        ("{uniform: [96, 32]}", "steps[0].steps[0].max_tokens.uniform", "must not exceed high"),
        ("{uniform: [1, 1.0e+12]}", "steps[0].steps[0].max_tokens.uniform", "absurd"),
        (
            "{lognormal: {median: 10, sigma: 9, max: 20}}",
            "steps[0].steps[0].max_tokens.lognormal",
            "sigma",
        ),
        ("{normal: {mean: 10}}", "steps[0].steps[0].max_tokens.normal", "missing 'std'"),
        ("{empirical: [4, -1]}", "steps[0].steps[0].max_tokens.empirical[1]", "must be >= 1"),
        ("{zipf: 2}", "steps[0].steps[0].max_tokens", "unknown distribution 'zipf'"),
        ("1" + "0" * 400, "steps[0].steps[0].max_tokens", "too large"),
    ],
)
def test_bad_distribution_parameters_name_their_path(
    max_tokens: str, path: str, phrase: str
) -> None:
    text = _program(
        f"""
        - loop: l
          iterations: 2
          steps:
            - llm: a
              instruction: x
              max_tokens: {max_tokens}
        """
    )
    _check(_error(text), path, phrase, 8)


def test_the_answer_is_a_final_llm_step_and_nesting_is_bounded() -> None:
    _check(
        _error("name: x\nsteps:\n  - {llm: a, instruction: x, max_tokens: 2}\n  - {tool: t}\n"),
        "steps[1]",
        "the last top-level step must be an llm step",
        4,
    )
    step = "{llm: a, instruction: x, max_tokens: 2}"
    for _ in range(dsl.MAX_DEPTH + 1):
        step = f"{{loop: l, iterations: 1, steps: [{step}]}}"
    error = _error(_program(f"- {step}"))
    assert error.path.startswith("steps[0].steps[0]") and "nested deeper than 8" in str(error)


def test_unreadable_files_are_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ProgramLoadError, match=r"missing\.yaml: cannot read"):
        load_program(tmp_path / "missing.yaml")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ProgramLoadError, match=r"latin\.yaml: not UTF-8"):
        load_program(tmp_path / "latin.yaml")


# --- no input crashes the loader -------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["llm", "tool", "parallel", "loop", "steps", "best", "vote", "a", "{x}"])
    | st.text(max_size=8)
)
_keys = st.sampled_from(
    [
        "name",
        "steps",
        "llm",
        "tool",
        "parallel",
        "loop",
        "instruction",
        "max_tokens",
        "branches",
        "iterations",
        "join",
        "best",
        "uniform",
        "normal",
        "lognormal",
        "empirical",
        "constant",
        "mean",
        "std",
        "max",
        "use",
        "until",
        "x",
    ]
) | st.text(max_size=6)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


def _valid_data() -> Any:
    return yaml.safe_load(REACT.read_text())


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_paths(item, (*path, i)))
    return out


def _only_load_errors(load: Any) -> None:
    try:
        program = load()
    except ProgramLoadError as exc:
        assert str(exc).startswith(exc.source)
    else:
        assert isinstance(program, Program)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_random_structures_only_raise_load_errors(data: Any) -> None:
    _only_load_errors(lambda: load_program_text(yaml.safe_dump(data), "fuzz.yaml"))
    _only_load_errors(lambda: load_program_data(data, "fuzz"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_programs_only_raise_load_errors(draw: st.DataObject) -> None:
    data = _valid_data()
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(_paths(data)[1:]))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and draw.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw.draw(_values)
    _only_load_errors(lambda: load_program_text(yaml.safe_dump(data), "fuzz.yaml"))


_YAML_CHARS = "ab:-[]{}&*!|>'\"#%@`, \n\t0.?<=~"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(_YAML_CHARS)), max_size=40) | st.text(max_size=20))
def test_random_text_only_raises_load_errors(text: str) -> None:
    _only_load_errors(lambda: load_program_text(text, "fuzz.yaml"))


# --- the JSON Schema -------------------------------------------------------------------


def test_committed_schema_is_generated() -> None:
    committed = yaml_loader.SCHEMA_PATH.read_text()
    assert committed == yaml_loader.schema_text(), (
        "regenerate: python -m agents.yaml_loader --schema > agents/schema/program.schema.json"
    )
    assert json.loads(committed) == program_schema()


def test_every_schema_property_has_a_description() -> None:
    def walk(node: Any, at: str) -> None:
        if isinstance(node, dict):
            for key, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{at}.{key}"
            for key, child in node.items():
                walk(child, f"{at}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{at}[{i}]")

    schema = program_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    walk(schema, "")


def test_schema_defaults_and_names_match_the_dsl() -> None:
    defs = program_schema()["$defs"]
    tool = defs["tool_step"]["properties"]
    assert (tool["argument"]["default"], tool["time_limit_s"]["default"]) == ("{output}", 5.0)
    assert (tool["latency_s"]["default"], tool["result_tokens"]["default"]) == (0.0, 32.0)
    assert defs["parallel_step"]["properties"]["join"]["default"] == "concat"
    assert defs["loop_step"]["properties"]["max_iterations"]["maximum"] == dsl.MAX_ITERATIONS
    # JSON Schema patterns search, so the schema's is anchored; the dsl full-matches.
    assert f"^{dsl._NAME.pattern}$" == yaml_loader.NAME_PATTERN


def _schema_errors(instance: Any) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(program_schema())
    return [error.message for error in validator.iter_errors(instance)]


def _examples() -> list[tuple[str, str]]:
    texts = [("react.yaml", REACT.read_text()), ("minimal", MINIMAL)]
    return texts + [(p.name, p.read_text()) for p in sorted(DATA.glob("*.yaml")) if p != REACT]


@pytest.mark.parametrize(("name", "text"), _examples())
def test_valid_examples_validate_against_the_schema(name: str, text: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(program_schema())
    load_program_text(text, name)
    assert _schema_errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize(
    "step",
    [
        "{llm: a, instruction: x, max_token: 4}",
        "{llm: a, instruction: x}",
        "{agent: a}",
        "{llm: a, tool: b, instruction: x, max_tokens: 4}",
        "{llm: a, instruction: x, max_tokens: {uniform: [1]}}",
        "{parallel: p, branches: 2, join: best, steps: [{tool: t}]}",
        "{loop: l, iterations: 2, max_iterations: 100, steps: [{tool: t}]}",
        "{tool: T}",
    ],
)
def test_schema_rejects_what_the_loader_rejects(step: str) -> None:
    text = _program(f"- {step}")
    _error(text)
    assert _schema_errors(yaml.safe_load(text)) != []


def test_cli_checks_files_and_prints_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert yaml_loader.main([str(REACT)]) == 0
    assert "my_react" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert yaml_loader.main([str(bad)]) == 1
    assert re.search(r"bad\.yaml:1:1: steps: missing", capsys.readouterr().err)
    assert yaml_loader.main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == program_schema()


# --- the pydantic models ---------------------------------------------------------------


def test_the_schema_is_the_models_own() -> None:
    """The committed schema is ProgramFile.model_json_schema() (definitions renamed to
    snake_case), so the validator and the schema cannot drift apart."""
    models = yaml_loader.ProgramFile.model_json_schema()
    schema = program_schema()
    assert schema["properties"].keys() == models["properties"].keys()
    assert {yaml_loader._snake(name) for name in models["$defs"]} == set(schema["$defs"])
    for name, model in [
        ("llm_step", yaml_loader.LlmStep),
        ("tool_step", yaml_loader.ToolStep),
        ("parallel_step", yaml_loader.ParallelStep),
        ("loop_step", yaml_loader.LoopStep),
    ]:
        assert list(schema["$defs"][name]["properties"]) == list(model.model_fields), name


def test_limits_come_from_the_dsl() -> None:
    defs = program_schema()["$defs"]
    llm, tool = defs["llm_step"]["properties"], defs["tool_step"]["properties"]
    parallel = defs["parallel_step"]["properties"]
    assert llm["temperature"]["anyOf"][0]["maximum"] == dsl.MAX_TEMPERATURE
    assert tool["time_limit_s"]["maximum"] == dsl.MAX_TIME_LIMIT_S
    assert parallel["max_branches"]["maximum"] == dsl.MAX_BRANCHES
    _check(
        _error(_program(f"- {{tool: t, time_limit_s: {dsl.MAX_TIME_LIMIT_S + 1}}}")),
        "steps[0].time_limit_s",
        f"must be at most {dsl.MAX_TIME_LIMIT_S:g}",
    )
    wide = (
        f"{{parallel: p, branches: 2, max_branches: {dsl.MAX_BRANCHES + 1}, steps: [{{tool: t}}]}}"
    )
    _check(_error(_program(f"- {wide}")), "steps[0].max_branches", f"at most {dsl.MAX_BRANCHES}")


def test_data_errors_read_like_file_errors_without_a_position() -> None:
    data = yaml.safe_load(_program("- {llm: a, instruction: x, max_tokens: {uniform: [9, 3]}}"))
    with pytest.raises(ProgramLoadError) as info:
        load_program_data(data, "request")
    error = info.value
    assert (error.path, error.line, error.column) == ("steps[0].max_tokens.uniform", None, None)
    assert str(error) == (
        "request: steps[0].max_tokens.uniform: low (9.0) must not exceed high (3.0)"
    )


def test_an_unknown_key_is_reported_before_the_errors_it_explains() -> None:
    # A misspelt key is also a missing one, and its step's other errors come after it.
    error = _error(_program("- {llm: a, instruction: 3, max_token: 4}"))
    _check(error, "steps[0].max_token", "did you mean 'max_tokens'?", 3)
    # An unknown top-level key comes before a problem deep in the steps.
    error = _error(_program("- {llm: a, instruction: 3, max_tokens: 4}") + "author: me\n")
    _check(error, "author", "unknown key 'author' for a program")


def test_null_optional_fields_mean_omitted() -> None:
    text = _program(
        "- {tool: t, use: null}", "- {loop: l, iterations: 2, until: null, steps: [{tool: u}]}"
    )
    program = load_program_text(text, "nulls.yaml")
    assert program.body[0] == Tool("t")
    assert isinstance(program.body[1], Loop) and program.body[1].until is None
