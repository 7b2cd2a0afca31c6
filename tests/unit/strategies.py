"""Hypothesis strategies for random valid agent programs, kept small (nesting depth,
fan-out widths and loop iterations of at most 3) so that a property test runs hundreds of
them in seconds."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from agents.distributions import AnyDistribution, Constant, Empirical, Uniform
from agents.dsl import Join, JoinKind, Llm, Loop, Node, Parallel, Program, Tool

# Fan-out widths and loop iterations: constants first, so failures shrink to them.
COUNTS: tuple[AnyDistribution, ...] = (
    Constant(1.0),
    Constant(2.0),
    Constant(3.0),
    Uniform(1.0, 3.0),
    Empirical((1.0, 3.0)),
)
TOKENS: tuple[AnyDistribution, ...] = (
    Constant(4.0),
    Constant(1.0),
    Uniform(1.0, 8.0),
    Empirical((2.0, 5.0, 7.0)),
)
LATENCIES: tuple[AnyDistribution, ...] = (Constant(0.0), Uniform(0.0, 0.002))


@st.composite
def programs(draw: st.DrawFn, max_depth: int = 3, max_body: int = 2, tools: bool = True) -> Program:
    """A random valid program: up to 3 top-level nodes then an answer Llm; Parallel and
    Loop nodes nest up to `max_depth` levels, each body holding up to `max_body` nodes."""
    counter = itertools.count()

    def fresh(kind: str) -> str:
        return f"{kind}_{next(counter)}"

    def template(name: str, allowed: frozenset[str]) -> str:
        fields = draw(st.lists(st.sampled_from(sorted(allowed)), max_size=2, unique=True))
        return f"\n<{name}" + "".join(f" {{{f}}}" for f in fields) + ">\n"

    def llm_node(allowed: frozenset[str], kind: str = "llm") -> Llm:
        name = fresh(kind)
        return Llm(name, template(name, allowed), draw(st.sampled_from(TOKENS)))

    def node(depth: int, allowed: frozenset[str]) -> Node:
        kinds = ["llm", "tool"] if tools else ["llm"]
        if depth < max_depth:
            kinds += ["parallel", "loop"]
        kind = draw(st.sampled_from(kinds))
        if kind == "llm":
            return llm_node(allowed)
        if kind == "tool":
            name = fresh("tool")
            return Tool(
                name,
                argument=template(name, allowed),
                latency_s=draw(st.sampled_from(LATENCIES)),
                result_tokens=draw(st.sampled_from(TOKENS)),
            )
        if kind == "parallel":
            name = fresh("par")
            inner = allowed | {"branch", "branches"}
            join_kind = draw(st.sampled_from(list(JoinKind)))
            evaluator = llm_node(allowed, "judge") if join_kind is JoinKind.BEST else None
            branches = draw(st.sampled_from(COUNTS))
            return Parallel(
                name,
                body=body(depth + 1, inner),
                branches=branches,
                join=Join(join_kind, evaluator),
                branches_from_output=draw(st.booleans()),
                # Programs may not draw more branches than max_branches allows.
                max_branches=draw(st.integers(max(1, round(branches.upper())), 3)),
            )
        name = fresh("loop")
        iterations = draw(st.sampled_from(COUNTS))
        return Loop(
            name,
            body=body(depth + 1, allowed | {"iteration"}),
            iterations=iterations,
            until=draw(st.sampled_from([None, "DONE"])),
            max_iterations=draw(st.integers(int(iterations.upper()), 3)),
        )

    def body(depth: int, allowed: frozenset[str]) -> tuple[Node, ...]:
        size = draw(st.integers(1, max_body))
        return tuple(node(depth, allowed) for _ in range(size))

    top = frozenset({"input", "output"})
    nodes = tuple(node(0, top) for _ in range(draw(st.integers(0, 3))))
    return Program(
        name="random",
        description="a random valid program",
        system="SYS",
        body=(*nodes, Llm("answer", "\n<answer {output}>\n", draw(st.sampled_from(TOKENS)))),
    )


def call_bounds(nodes: tuple[Node, ...]) -> tuple[int, int]:
    """(fewest, most) LLM calls a synthetic run of `nodes` can issue."""
    low = high = 0
    for node in nodes:
        if isinstance(node, Llm):
            low, high = low + 1, high + 1
        elif isinstance(node, Parallel):
            lo, hi = call_bounds(node.body)
            judge = 1 if node.join.evaluator is not None else 0
            width = min(round(node.branches.upper()), node.max_branches)
            low, high = low + lo + judge, high + width * hi + judge
        elif isinstance(node, Loop):
            lo, hi = call_bounds(node.body)
            low, high = low + lo, high + node.max_iterations * hi
    return low, high
