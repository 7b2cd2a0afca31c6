"""Built-in agent programs. Each follows a published agent shape, named in its `source`;
agents/README.md tabulates their calls and expected token amplification.

Output lengths and tool result sizes are distributions, so a synthetic-mode task draws its
shape from the task seed (same seed, same shape). Tools in these programs run for real in
live mode and are simulated in synthetic mode (their drawn latency and result size), which
keeps synthetic workloads reproducible.
"""

from __future__ import annotations

from agents.distributions import Constant, Empirical, LogNormal, NormalClipped, Uniform
from agents.dsl import Join, JoinKind, Llm, Loop, Parallel, Program, Tool

_SYSTEM = "You are a careful assistant that plans, works step by step and answers."


def chat() -> Program:
    return Program(
        name="chat",
        description="one call: the chat-turn baseline agents are compared with",
        source="a single chat completion (the 1x of Anthropic's 4x/15x comparison)",
        system=_SYSTEM,
        body=(
            Llm(
                "answer",
                "\nAnswer the user.\nAnswer:\n",
                NormalClipped(mu=96, std=32, low=16, high=192),
            ),
        ),
    )


def react() -> Program:
    return Program(
        name="react",
        description="thought -> tool -> observation loop until FINAL ANSWER, then answer",
        source="Yao et al. 2023, ReAct: Synergizing Reasoning and Acting in Language Models",
        system=_SYSTEM + " Use the search tool; end with FINAL ANSWER when you know it.",
        body=(
            Loop(
                "steps",
                body=(
                    Llm(
                        "thought",
                        "\nThought {iteration}: what to look up next.\nAction: search[",
                        Uniform(24, 72),
                    ),
                    Tool(
                        "observation",
                        tool="search",
                        argument="{output}",
                        latency_s=LogNormal(median=0.05, sigma=0.5, high=1.0),
                        result_tokens=LogNormal(median=180, sigma=0.4, high=400),
                    ),
                ),
                iterations=Uniform(1.5, 4.5),  # 2..4 rounds, mean 3
                until="FINAL ANSWER",
                max_iterations=6,
            ),
            Llm("answer", "\nFINAL ANSWER:\n", NormalClipped(mu=64, std=16, low=16, high=128)),
        ),
    )


def plan_execute(workers: int = 3) -> Program:
    """A planner call writes a plan, one worker call per plan step runs in parallel, and a
    synthesizer reads the plan and every result and writes the answer."""
    return Program(
        name="plan_execute",
        description="planner -> N parallel workers -> synthesizer (answer streams)",
        source="Wang et al. 2023, Plan-and-Solve prompting; LangChain plan-and-execute",
        system=_SYSTEM,
        body=(
            Llm(
                "planner",
                "\nWrite a short numbered plan, one step per line.\nPlan:\n",
                Constant(64),
            ),
            Parallel(
                "workers",
                body=(
                    Llm(
                        "worker",
                        "\nCarry out step {branch} of the plan.\nResult:\n",
                        Constant(48),
                    ),
                ),
                branches=Constant(workers),
                branches_from_output=True,
                max_branches=8,
            ),
            Llm(
                "synthesizer",
                "\nUsing the plan and every result, answer the user.\nAnswer:\n",
                Constant(64),
            ),
        ),
    )


def map_reduce() -> Program:
    return Program(
        name="map_reduce",
        description="load a long document, summarize its parts in parallel, reduce",
        source="LangChain map-reduce summarization (after Dean & Ghemawat's MapReduce)",
        system=_SYSTEM,
        body=(
            Tool(
                "document",
                tool="search",
                argument="{input}",
                latency_s=LogNormal(median=0.05, sigma=0.5, high=1.0),
                result_tokens=Uniform(300, 500),
            ),
            Parallel(
                "map",
                body=(
                    Llm(
                        "summarize",
                        "\nSummarize part {branch} of {branches} of the document.\nSummary:\n",
                        Uniform(32, 64),
                    ),
                ),
                branches=Uniform(3.5, 6.5),  # 4..6 parts
                max_branches=8,
            ),
            Llm("reduce", "\nCombine the summaries into one.\nSummary:\n", Uniform(64, 96)),
        ),
    )


def self_consistency(samples: int = 5) -> Program:
    return Program(
        name="self_consistency",
        description="n sampled reasoning paths, majority vote, answer",
        source="Wang et al. 2022, Self-Consistency Improves Chain of Thought Reasoning",
        system=_SYSTEM,
        body=(
            Parallel(
                "paths",
                body=(
                    Llm(
                        "reason",
                        "\nThink step by step, then state the answer.\nReasoning:\n",
                        Uniform(64, 128),
                        temperature=0.8,
                    ),
                ),
                branches=Constant(samples),
                join=Join(JoinKind.VOTE),
            ),
            Llm("answer", "\nThe most consistent answer is:\n", Constant(32)),
        ),
    )


def tree_of_thoughts(breadth: int = 3, depth: int = 3) -> Program:
    return Program(
        name="tree_of_thoughts",
        description="breadth x depth thoughts; an evaluator keeps the best at each level",
        source="Yao et al. 2023, Tree of Thoughts: Deliberate Problem Solving with LLMs",
        system=_SYSTEM,
        body=(
            Loop(
                "levels",
                body=(
                    Parallel(
                        "candidates",
                        body=(
                            Llm(
                                "thought",
                                "\nPropose next step {branch} (level {iteration}).\nStep:\n",
                                Uniform(24, 56),
                                temperature=0.9,
                            ),
                        ),
                        branches=Constant(breadth),
                        join=Join(
                            JoinKind.BEST,
                            evaluator=Llm(
                                "evaluate",
                                "\nWhich proposed step is most promising? Reply with its "
                                "number.\nBest:\n",
                                Constant(8),
                            ),
                        ),
                    ),
                ),
                iterations=Constant(depth),
                max_iterations=depth,
            ),
            Llm("answer", "\nFollow the chosen steps to the answer.\nAnswer:\n", Constant(64)),
        ),
    )


def reflexion() -> Program:
    return Program(
        name="reflexion",
        description="attempt -> critique -> retry until correct, then answer",
        source="Shinn et al. 2023, Reflexion: Language Agents with Verbal Reinforcement Learning",
        system=_SYSTEM,
        body=(
            Llm("attempt", "\nAttempt the task.\nAttempt:\n", Uniform(64, 128)),
            Loop(
                "reflect",
                body=(
                    Llm(
                        "critique",
                        "\nCritique the last attempt; say CORRECT if it is right.\nCritique:\n",
                        Uniform(32, 64),
                    ),
                    Llm("retry", "\nImprove the attempt.\nAttempt:\n", Uniform(64, 128)),
                ),
                iterations=Uniform(0.5, 3.49),  # 1..3 rounds, mean 2
                until="CORRECT",
                max_iterations=4,
            ),
            Llm("answer", "\nFinal answer:\n", Constant(48)),
        ),
    )


def multi_agent_debate(agents: int = 3, rounds: int = 2) -> Program:
    return Program(
        name="multi_agent_debate",
        description="m agents argue for r rounds, each seeing all arguments; a judge answers",
        source="Du et al. 2023, Improving Factuality and Reasoning through Multiagent Debate",
        system=_SYSTEM,
        body=(
            Loop(
                "rounds",
                body=(
                    Parallel(
                        "debaters",
                        body=(
                            Llm(
                                "argue",
                                "\nAgent {branch}, round {iteration}: argue your answer, "
                                "answering the others.\nArgument:\n",
                                Uniform(48, 96),
                            ),
                        ),
                        branches=Constant(agents),
                    ),
                ),
                iterations=Constant(rounds),
                max_iterations=rounds,
            ),
            Llm("judge", "\nAs the judge, give the final answer.\nAnswer:\n", Constant(64)),
        ),
    )


def coding_agent() -> Program:
    """Long-horizon edit/run loop with large tool outputs on a growing context, shaped on
    the GitHub Copilot coding-agent traces: ~7.8 LLM calls per user turn and prompt to
    completion ~129:1 (most of the context is tool output the agent keeps reading)."""
    return Program(
        name="coding_agent",
        description="plan, then edit -> run tools loop over a growing context, then report",
        source="GitHub Copilot coding-agent traces (Azure public dataset, 2026): 7.83 calls "
        "per turn, prompt:completion ~129:1",
        system=_SYSTEM + " You are a coding agent working in a repository.",
        body=(
            Llm("plan", "\nRead the issue and plan the change.\nPlan:\n", Uniform(32, 64)),
            Loop(
                "work",
                body=(
                    Llm(
                        "edit",
                        "\nStep {iteration}: choose a command or edit.\nCommand:\n",
                        LogNormal(median=20, sigma=0.5, high=96),
                    ),
                    Tool(
                        "run",
                        tool="python",
                        argument="{output}",
                        latency_s=LogNormal(median=0.3, sigma=0.8, high=5.0),
                        result_tokens=LogNormal(median=1300, sigma=0.5, high=4000),
                    ),
                ),
                iterations=Empirical((5.0, 5.0, 6.0, 6.0, 7.0)),  # 5.8 + plan + report
                until="DONE",
                max_iterations=10,
            ),
            Llm("report", "\nSummarize the change for the user.\nSummary:\n", Uniform(32, 64)),
        ),
    )


BUILTIN_PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        chat(),
        react(),
        plan_execute(),
        map_reduce(),
        self_consistency(),
        tree_of_thoughts(),
        reflexion(),
        multi_agent_debate(),
        coding_agent(),
    )
}
