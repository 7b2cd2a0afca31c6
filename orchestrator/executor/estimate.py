"""Expected cost of a program, by seeded Monte Carlo over the interpreter itself.

Running the interpreter with instant synthetic outcomes (each LLM call returns exactly
its drawn max_tokens, each tool its drawn result size) yields the exact token counts a
synthetic-mode task with that seed would have on a real engine, because prompts are
built from the same token ids. Averaging over seeds gives the expected llm calls, prompt
and output tokens and token amplification per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.dsl import Llm, Parallel, Program, Tool, walk
from orchestrator.domain import AgentInfo, AgentStepInfo, Mode, TaskSpec
from orchestrator.executor.interpreter import ActionKind, Encoder, Interpreter, Outcome

# A filler token id for synthetic outputs; counts, not ids, matter here.
_FILLER = 5

# Token amplification is a ratio to (user input + answer), so an expected figure means
# nothing without its input. Every place that quotes one (`inflection agents`,
# ListAgents, agents/README.md, benchmarks/amplification.py) uses this input.
SAMPLE_INPUT = "Find out why our agent fleet needs twice the GPUs we planned, and fix it."

# The model `inflection run` and `inflection serve` simulate by default.
DEFAULT_CATALOG_MODEL = "llama-3.1-8b"


@dataclass(slots=True, frozen=True)
class TaskShape:
    """One synthetic task's cost."""

    llm_calls: int
    tool_calls: int
    prompt_tokens: int
    output_tokens: int
    user_input_tokens: int
    final_output_tokens: int
    max_context: int  # longest prompt + output of any call

    @property
    def token_amplification(self) -> float:
        base = self.user_input_tokens + self.final_output_tokens
        return (self.prompt_tokens + self.output_tokens) / base if base else 0.0


@dataclass(slots=True, frozen=True)
class Expectation:
    tasks: int  # Monte Carlo samples
    llm_calls: float
    tool_calls: float
    prompt_tokens: float
    output_tokens: float
    token_amplification: float  # mean of per-task amplification
    max_context: int  # the largest over the samples


def dry_run(interpreter: Interpreter, spec: TaskSpec, seed: int) -> TaskShape:
    """Run one task to completion with instant outcomes: each call returns its drawn
    max_tokens. In synthetic mode that is the task's exact shape; in live mode, the
    widest and longest it can take."""
    task = interpreter.start("dry", spec, seed)
    prompt = output = final = longest = 0
    # Live mode: outputs that fan out as wide as allowed and never end a loop early, so
    # the shape is the widest a live task can take (for context checks).
    text = "\n".join(["step"] * 64) if spec.mode is Mode.LIVE else ""
    while True:
        # advance() also folds finished frames into their parents, so the task is done
        # only once an advance after the last completion finds nothing left.
        actions = interpreter.advance(task, budget=1 << 30)
        if task.done:
            break
        if not actions:
            raise RuntimeError("program made no progress (an interpreter bug)")
        for action in actions:
            if action.kind is ActionKind.LLM:
                assert action.sampling is not None
                n = action.sampling.max_tokens
                prompt += len(action.prompt_token_ids)
                output += n
                longest = max(longest, len(action.prompt_token_ids) + n)
                if action.answer:
                    final = n
            else:
                n = action.result_tokens
            interpreter.complete(task, action.action_id, Outcome((_FILLER,) * n, text))
    return TaskShape(
        llm_calls=task.llm_calls,
        tool_calls=task.tool_calls,
        prompt_tokens=prompt,
        output_tokens=output,
        user_input_tokens=task.user_input_tokens,
        final_output_tokens=final,
        max_context=longest,
    )


def expect(
    interpreter: Interpreter, spec: TaskSpec, samples: int = 200, seed: int = 0
) -> Expectation:
    """Mean cost per task over `samples` seeds (synthetic mode)."""
    spec_synthetic = spec if spec.mode is Mode.SYNTHETIC else _synthetic(spec)
    shapes = [dry_run(interpreter, spec_synthetic, seed + i) for i in range(samples)]
    return Expectation(
        tasks=samples,
        llm_calls=float(np.mean([s.llm_calls for s in shapes])),
        tool_calls=float(np.mean([s.tool_calls for s in shapes])),
        prompt_tokens=float(np.mean([s.prompt_tokens for s in shapes])),
        output_tokens=float(np.mean([s.output_tokens for s in shapes])),
        token_amplification=float(np.mean([s.token_amplification for s in shapes])),
        max_context=max(s.max_context for s in shapes),
    )


def catalog_encoder(model: str = DEFAULT_CATALOG_MODEL) -> Encoder:
    """The simulated tokenizer of a catalog model (its vocabulary, about 1.3 tokens per
    English word): what a simulated replica of that model counts, with nothing to load."""
    from orchestrator.sim.catalog import load_catalog
    from orchestrator.sim.tokens import SimTokenizer

    tokenizer = SimTokenizer(load_catalog().model(model).vocab)
    return Encoder(tokenizer.encode, tokenizer.bos_token_id)


def approximate_encoder() -> Encoder:
    """For estimates without a model at hand: about 4 characters per token, the usual
    average of English text under BPE tokenizers. The ids are meaningless."""
    return Encoder(lambda text: [_FILLER] * max(1, round(len(text) / 4)), bos_token_id=1)


def describe(program: Program, expected: Expectation) -> AgentInfo:
    """A program as ListAgents and `inflection agents` show it."""
    steps = []
    for path, node in walk(program.body):
        if isinstance(node, Llm):
            kind, tokens, count = "llm", node.max_tokens.mean(), 1.0
        elif isinstance(node, Tool):
            kind, tokens, count = "tool", node.result_tokens.mean(), 1.0
        elif isinstance(node, Parallel):
            kind, tokens, count = "parallel", 0.0, node.branches.mean()
        else:
            kind, tokens, count = "loop", 0.0, node.iterations.mean()
        steps.append(AgentStepInfo(node.name, kind, path, tokens, count))
    return AgentInfo(
        name=program.name,
        description=program.description,
        source=program.source,
        steps=tuple(steps),
        expected_llm_calls=expected.llm_calls,
        expected_token_amplification=expected.token_amplification,
    )


def _synthetic(spec: TaskSpec) -> TaskSpec:
    from dataclasses import replace

    return replace(spec, mode=Mode.SYNTHETIC)
