"""Built-in agent programs."""

from __future__ import annotations

from agents.program import LlmStep, Program

_SYSTEM = "You are a careful assistant that plans, works step by step and answers."


def plan_execute(workers: int = 3) -> Program:
    """Plan-and-execute (Wang et al. 2023, "Plan-and-Solve"; LangChain's plan-and-execute
    agent): a planner call writes a plan, one worker call per plan step runs in parallel,
    and a synthesizer reads the plan and every result and writes the answer."""
    return Program(
        name="plan_execute",
        description="planner -> N parallel workers -> synthesizer (answer streams)",
        system=_SYSTEM,
        steps=(
            LlmStep(
                name="planner",
                instruction="\nWrite a short numbered plan, one step per line.\nPlan:\n",
                max_tokens=64,
            ),
            LlmStep(
                name="worker",
                instruction="\nCarry out step {branch} of the plan.\nResult:\n",
                max_tokens=48,
                after=("planner",),
                fanout=workers,
                fanout_from="planner",
            ),
            LlmStep(
                name="synthesizer",
                instruction="\nUsing the plan and every result, answer the user.\nAnswer:\n",
                max_tokens=64,
                after=("planner", "worker"),
                answer=True,
            ),
        ),
    )


BUILTIN_PROGRAMS: dict[str, Program] = {p.name: p for p in (plan_execute(),)}
