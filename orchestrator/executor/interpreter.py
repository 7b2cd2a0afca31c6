"""Pure interpretation of agent programs (agents.dsl): what runs next, with which prompt.

A task's progress is a tree of frames mirroring the program: a sequence frame per
sequence of nodes (the top level, each parallel branch, each loop iteration), with one
child frame at a time for the node it is running. `Interpreter.advance` walks the tree,
opens the frames that can start, and returns the leaf actions (LLM calls, tool runs)
that are ready; `Interpreter.complete` records an action's outcome. Both are plain
functions of the state, with no awaits, no Ray and no gRPC: the executor's driver is the
only caller, so the driver alone mutates a task's progress.

Randomness (output lengths, fan-out widths, iteration counts, simulated tools, a
best-of pick without a usable evaluator answer) is drawn from a generator seeded by the
task seed and the frame's path, so the same seed gives the same shape and token counts
whatever order the calls finish in.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agents.distributions import sample_int
from agents.dsl import Join, JoinKind, Llm, Loop, Node, Parallel, Program, Tool
from orchestrator.domain import Mode, Sampling, TaskSpec


class ActionKind(enum.Enum):
    LLM = "llm"
    TOOL = "tool"


@dataclass(slots=True, frozen=True)
class Action:
    """A leaf the driver should run now."""

    action_id: str  # the call_id of an LLM call; unique within the task
    kind: ActionKind
    step: str  # node name
    branch: int  # 0-based index within the innermost fan-out; 0 outside one
    after: tuple[str, ...]  # action_ids this one depends on (edges of the executed graph)
    # LLM calls:
    prompt_token_ids: tuple[int, ...] = ()
    sampling: Sampling | None = None
    answer: bool = False  # the task's answer: stream it to the client
    # Tool runs:
    tool: str | None = None  # registered tool name; None = simulated
    argument: str = ""
    latency_s: float = 0.0  # simulated tools
    result_tokens: int = 0  # simulated tools
    time_limit_s: float = 0.0  # real tools


@dataclass(slots=True, frozen=True)
class Outcome:
    """What an action produced."""

    token_ids: tuple[int, ...]  # appended to the context after the action's header
    text: str


class Encoder:
    """Template rendering and token encoding shared by all tasks of a program."""

    def __init__(self, encode: Callable[[str], list[int]], bos_token_id: int | None) -> None:
        self._encode = encode
        self._bos = bos_token_id
        self._cache: dict[str, tuple[int, ...]] = {}

    def __call__(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self._encode(text))
            if len(self._cache) < 4096:
                self._cache[text] = ids
        return ids

    @property
    def bos(self) -> tuple[int, ...]:
        return () if self._bos is None else (self._bos,)


# ---- frames -------------------------------------------------------------------------


class _State(enum.Enum):
    READY = "ready"  # a leaf that has not been handed to the driver
    RUNNING = "running"
    DONE = "done"


@dataclass(slots=True)
class _Vars:
    branch: int = 0  # 1-based inside a Parallel; 0 outside
    branches: int = 0
    iteration: int = 0  # 1-based inside a Loop


@dataclass(slots=True)
class _Leaf:
    node: Llm | Tool
    path: str
    action: Action | None = None
    state: _State = _State.READY
    header: tuple[int, ...] = ()  # instruction (LLM) or observation header (tool)
    added: tuple[int, ...] = ()  # header + output, once done
    text: str = ""


@dataclass(slots=True)
class _Seq:
    nodes: tuple[Node, ...]
    path: str
    context: tuple[int, ...]  # grows as children finish
    frontier: tuple[str, ...]  # action ids the next child depends on
    vars: _Vars
    output: str  # text of the latest LLM output in this thread ({output}, loop `until`)
    index: int = 0
    child: _Child | None = None
    added: tuple[int, ...] = ()  # what this sequence appended to its starting context
    answer_last: bool = False  # top level: the last node is the task's answer

    @property
    def done(self) -> bool:
        return self.index >= len(self.nodes)


@dataclass(slots=True)
class _Par:
    node: Parallel
    path: str
    vars: _Vars  # the enclosing sequence's (an evaluator inside a loop sees {iteration})
    branches: list[_Seq]
    judge: _Leaf | None = None  # the evaluator of a 'best' join, once branches are done
    added: tuple[int, ...] = ()
    exit: tuple[str, ...] = ()
    output: str = ""
    done: bool = False


@dataclass(slots=True)
class _Loop:
    node: Loop
    path: str
    iterations: int  # synthetic: drawn at start; live: max_iterations
    current: _Seq
    added: tuple[int, ...] = ()
    done: bool = False


_Child = _Leaf | _Par | _Loop  # what a sequence runs: one node at a time


@dataclass(slots=True)
class TaskProgress:
    """The whole progress of one task (owned by the executor's driver)."""

    task_id: str
    spec: TaskSpec
    program: Program
    seed: int  # the task seed, or one drawn for it
    root: _Seq
    user_input_tokens: int
    leaves: dict[str, _Leaf] = field(default_factory=dict)  # by action id
    running: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    answer_text: str = ""
    answer_id: str | None = None

    @property
    def done(self) -> bool:
        return self.root.done


# ---- the interpreter ----------------------------------------------------------------


_INT = re.compile(r"\d+")


class Interpreter:
    """Stateless rules over TaskProgress; one per (program, tokenizer)."""

    def __init__(self, program: Program, encoder: Encoder) -> None:
        self.program = program
        self._encode = encoder
        self._head = encoder.bos + encoder(program.system + "\nUser: ")

    def start(self, task_id: str, spec: TaskSpec, seed: int) -> TaskProgress:
        input_ids = self._encode(spec.input)
        root = _Seq(
            nodes=self.program.body,
            path="body",
            context=self._head + input_ids,
            frontier=(),
            vars=_Vars(),
            output=spec.input,
            answer_last=True,
        )
        return TaskProgress(task_id, spec, self.program, seed, root, len(input_ids))

    # -- randomness and rendering --

    def _rng(self, task: TaskProgress, path: str) -> np.random.Generator:
        digest = hashlib.blake2b(f"{task.seed}/{path}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "big"))

    def _render(self, template: str, task: TaskProgress, seq: _Seq) -> str:
        return template.format(
            input=task.spec.input,
            branch=seq.vars.branch,
            branches=seq.vars.branches,
            iteration=seq.vars.iteration,
            output=seq.output,
        )

    def _sampling(self, task: TaskProgress, node: Llm, path: str) -> Sampling:
        spec = task.spec
        tokens = dict(spec.step_max_tokens).get(node.name)
        if tokens is None:
            tokens = sample_int(node.max_tokens, self._rng(task, path + "#len"), minimum=1)
        if spec.max_tokens is not None:
            tokens = min(tokens, spec.max_tokens)
        ignore_eos = spec.ignore_eos if spec.ignore_eos is not None else spec.mode is Mode.SYNTHETIC
        call_seed = None
        if spec.seed is not None:
            digest = hashlib.blake2b(f"{spec.seed}/{path}".encode(), digest_size=4).digest()
            call_seed = int.from_bytes(digest, "big")
        return Sampling(
            max_tokens=tokens,
            temperature=node.temperature if node.temperature is not None else spec.temperature,
            top_p=spec.top_p,
            ignore_eos=ignore_eos,
            seed=call_seed,
        )

    # -- opening frames --

    def _open(self, task: TaskProgress, seq: _Seq) -> _Child:
        node = seq.nodes[seq.index]
        path = f"{seq.path}[{seq.index}]"
        if isinstance(node, Llm | Tool):
            answer = seq.answer_last and seq.index == len(seq.nodes) - 1
            return self._leaf(task, seq, node, path, answer=answer)
        if isinstance(node, Parallel):
            width = self._width(task, seq, node, path)
            branches = [
                _Seq(
                    nodes=node.body,
                    path=f"{path}/b{b}",
                    context=seq.context,
                    frontier=seq.frontier,
                    vars=_Vars(branch=b + 1, branches=width, iteration=seq.vars.iteration),
                    output=seq.output,
                )
                for b in range(width)
            ]
            return _Par(node, path, seq.vars, branches)
        iterations = node.max_iterations
        if task.spec.mode is Mode.SYNTHETIC or node.until is None:
            drawn = sample_int(node.iterations, self._rng(task, path + "#n"), minimum=1)
            iterations = min(drawn, node.max_iterations)
        return _Loop(
            node,
            path,
            iterations,
            self._iteration(seq, node, path, 1, seq.context, seq.frontier, seq.output),
        )

    def _width(self, task: TaskProgress, seq: _Seq, node: Parallel, path: str) -> int:
        if task.spec.mode is Mode.LIVE and node.branches_from_output:
            lines = sum(1 for line in seq.output.splitlines() if line.strip())
            return max(1, min(node.max_branches, lines))
        drawn = sample_int(node.branches, self._rng(task, path + "#w"), minimum=1)
        return min(drawn, node.max_branches)

    def _iteration(
        self,
        seq: _Seq,
        node: Loop,
        path: str,
        number: int,
        context: tuple[int, ...],
        frontier: tuple[str, ...],
        output: str,
    ) -> _Seq:
        return _Seq(
            nodes=node.body,
            path=f"{path}/i{number}",
            context=context,
            frontier=frontier,
            vars=_Vars(branch=seq.vars.branch, branches=seq.vars.branches, iteration=number),
            output=output,
        )

    def _leaf(
        self, task: TaskProgress, seq: _Seq, node: Llm | Tool, path: str, *, answer: bool
    ) -> _Leaf:
        leaf = _Leaf(node, path)
        action_id = f"{task.task_id}-{node.name}-{len(task.leaves)}"
        if isinstance(node, Llm):
            leaf.header = self._encode(self._render(node.instruction, task, seq))
            leaf.action = Action(
                action_id=action_id,
                kind=ActionKind.LLM,
                step=node.name,
                branch=max(0, seq.vars.branch - 1),
                after=seq.frontier,
                prompt_token_ids=seq.context + leaf.header,
                sampling=self._sampling(task, node, path),
                answer=answer,
            )
        else:
            leaf.header = self._encode(f"\nObservation from {node.tool or node.name}:\n")
            rng = self._rng(task, path + "#tool")
            # Synthetic mode simulates every tool (drawn latency and result size), so
            # its token counts stay reproducible; live mode runs the real ones.
            real = node.tool if task.spec.mode is Mode.LIVE else None
            leaf.action = Action(
                action_id=action_id,
                kind=ActionKind.TOOL,
                step=node.name,
                branch=max(0, seq.vars.branch - 1),
                after=seq.frontier,
                tool=real,
                argument=self._render(node.argument, task, seq),
                latency_s=max(0.0, node.latency_s.sample(rng)),
                result_tokens=sample_int(node.result_tokens, rng, minimum=1),
                time_limit_s=node.time_limit_s,
            )
        task.leaves[action_id] = leaf
        if answer:
            task.answer_id = action_id
        return leaf

    # -- advancing --

    def advance(self, task: TaskProgress, budget: int) -> list[Action]:
        """Open every frame that can start and return up to `budget` ready actions
        (the driver dispatches them and reports back through `complete`)."""
        ready: list[_Leaf] = []
        self._advance_seq(task, task.root, ready)
        out: list[Action] = []
        for leaf in ready[: max(0, budget)]:
            assert leaf.action is not None
            leaf.state = _State.RUNNING
            task.running += 1
            out.append(leaf.action)
        return out

    def _advance_seq(self, task: TaskProgress, seq: _Seq, ready: list[_Leaf]) -> None:
        while not seq.done:
            if seq.child is None:
                seq.child = self._open(task, seq)
            child = seq.child
            finished, added, exits, output = self._advance_frame(task, child, ready)
            if not finished:
                return
            seq.context = seq.context + added
            seq.added = seq.added + added
            seq.frontier = exits
            if output is not None:  # a tool's result is context, not the agent's output
                seq.output = output
            seq.index += 1
            seq.child = None

    def _advance_frame(
        self, task: TaskProgress, frame: _Child, ready: list[_Leaf]
    ) -> tuple[bool, tuple[int, ...], tuple[str, ...], str | None]:
        """(finished?, tokens it appended, its exit action ids, its LLM output text or
        None when it produced none)."""
        if isinstance(frame, _Leaf):
            if frame.state is _State.READY:
                ready.append(frame)
            if frame.state is not _State.DONE:
                return False, (), (), None
            assert frame.action is not None
            text = frame.text if isinstance(frame.node, Llm) else None
            return True, frame.added, (frame.action.action_id,), text
        if isinstance(frame, _Par):
            return self._advance_par(task, frame, ready)
        return self._advance_loop(task, frame, ready)

    def _advance_par(
        self, task: TaskProgress, par: _Par, ready: list[_Leaf]
    ) -> tuple[bool, tuple[int, ...], tuple[str, ...], str | None]:
        if not par.done:
            for branch in par.branches:
                self._advance_seq(task, branch, ready)
            if not all(b.done for b in par.branches):
                return False, (), (), None
            self._join(task, par, par.node.join, ready)
        return par.done, par.added, par.exit, par.output

    def _join(self, task: TaskProgress, par: _Par, join: Join, ready: list[_Leaf]) -> None:
        branches = par.branches
        if join.kind is JoinKind.CONCAT:
            par.added = tuple(t for b in branches for t in b.added)
            par.exit = tuple(a for b in branches for a in b.frontier)
            par.output = "\n".join(b.output for b in branches)
            par.done = True
            return
        if join.kind is JoinKind.VOTE:
            counts = Counter(b.output.strip() for b in branches)
            top = max(counts.values())
            chosen = next(b for b in branches if counts[b.output.strip()] == top)
            par.added = chosen.added
            par.exit = tuple(a for b in branches for a in b.frontier)
            par.output = chosen.output
            par.done = True
            return
        # BEST: an evaluator call reads every branch, then the chosen branch continues.
        evaluator = join.evaluator
        assert evaluator is not None
        if par.judge is None:
            parent = _Seq(
                nodes=(evaluator,),
                path=f"{par.path}/judge",
                context=branches[0].context[: len(branches[0].context) - len(branches[0].added)]
                + tuple(t for b in branches for t in b.added),
                frontier=tuple(a for b in branches for a in b.frontier),
                vars=_Vars(par.vars.branch, len(branches), par.vars.iteration),
                output="\n".join(f"{i + 1}. {b.output}" for i, b in enumerate(branches)),
            )
            par.judge = self._leaf(task, parent, evaluator, f"{par.path}.join", answer=False)
        if par.judge.state is _State.READY:
            ready.append(par.judge)
        if par.judge.state is not _State.DONE:
            return
        assert par.judge.action is not None
        numbers = [int(m) for m in _INT.findall(par.judge.text)]
        valid = [n for n in numbers if 1 <= n <= len(branches)]
        if task.spec.mode is Mode.LIVE and valid:
            index = valid[0] - 1
        else:
            index = int(self._rng(task, par.path + "#pick").integers(len(branches)))
        chosen = branches[index]
        par.added = chosen.added
        par.exit = (par.judge.action.action_id,)
        par.output = chosen.output
        par.done = True

    def _advance_loop(
        self, task: TaskProgress, loop: _Loop, ready: list[_Leaf]
    ) -> tuple[bool, tuple[int, ...], tuple[str, ...], str | None]:
        while not loop.done:
            current = loop.current
            self._advance_seq(task, current, ready)
            if not current.done:
                return False, (), (), None
            loop.added = loop.added + current.added
            number = current.vars.iteration
            stop = number >= loop.iterations
            node = loop.node
            if task.spec.mode is Mode.LIVE and node.until is not None:
                stop = stop or node.until in current.output
            if stop:
                loop.done = True
                break
            loop.current = _Seq(
                nodes=node.body,
                path=f"{loop.path}/i{number + 1}",
                context=current.context,
                frontier=current.frontier,
                vars=_Vars(current.vars.branch, current.vars.branches, number + 1),
                output=current.output,
            )
        return True, loop.added, loop.current.frontier, loop.current.output

    # -- completing --

    def complete(self, task: TaskProgress, action_id: str, outcome: Outcome) -> None:
        leaf = task.leaves[action_id]
        leaf.state = _State.DONE
        leaf.added = leaf.header + outcome.token_ids
        leaf.text = outcome.text
        task.running -= 1
        if leaf.action is not None and leaf.action.kind is ActionKind.LLM:
            task.llm_calls += 1
        else:
            task.tool_calls += 1
        if action_id == task.answer_id:
            task.answer_text = outcome.text
