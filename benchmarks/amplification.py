"""Measured vs expected token amplification of every built-in agent pattern.

Starts a deployment (one replica of vLLM's CPU build with the tiny model), runs each
pattern's tasks in synthetic mode over gRPC, and prints per pattern: LLM calls per task,
prompt:completion, the expected amplification (Monte Carlo over the program with the
model's tokenizer) and the measured one, and their ratio.

    .venv/bin/python benchmarks/amplification.py [--tasks 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


async def main(tasks: int) -> list[dict[str, float | str]]:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from agents import BUILTIN_PROGRAMS
    from orchestrator.client import AsyncClient, TaskResult
    from orchestrator.config import DeploymentConfig
    from orchestrator.domain import TaskSpec
    from orchestrator.executor.estimate import SAMPLE_INPUT, expect
    from orchestrator.executor.interpreter import Encoder, Interpreter
    from orchestrator.server.app import Deployment, HfTokenizer

    console = Console()
    config = DeploymentConfig.model_validate(
        {
            "ray": {"address": "local", "num_cpus": 2},
            "server": {"port": 0},
            # Measured on the real engine: its tokenizer and prefix cache, not the sim's.
            "replicas": {"backend": "vllm"},
        }
    )
    deployment = await Deployment.start(config)
    rows: list[dict[str, float | str]] = []
    try:
        tokenizer = HfTokenizer(deployment.pool.model)
        encoder = Encoder(tokenizer.encode, tokenizer.bos_token_id)
        async with AsyncClient(deployment.address, timeout=900) as client:
            gate = asyncio.Semaphore(16)
            for name, program in BUILTIN_PROGRAMS.items():

                async def one(seed: int, agent: str = name) -> TaskResult:
                    async with gate:
                        return await client.run(agent, SAMPLE_INPUT, seed=seed)

                results = await asyncio.gather(*(one(s) for s in range(tasks)))
                expected = expect(
                    Interpreter(program, encoder),
                    TaskSpec(agent=name, input=SAMPLE_INPUT),
                    2000,
                    10**6,
                )
                measured = float(np.mean([r.usage.token_amplification for r in results]))
                prompt = sum(r.usage.prompt_tokens_total for r in results)
                output = sum(r.usage.output_tokens_total for r in results)
                rows.append(
                    {
                        "agent": name,
                        "calls_per_task": float(np.mean([r.usage.llm_calls for r in results])),
                        "tool_calls_per_task": float(
                            np.mean([r.usage.tool_calls for r in results])
                        ),
                        "prompt_to_completion": prompt / output,
                        "prefix_hit_rate": sum(r.usage.cached_tokens_total for r in results)
                        / prompt,
                        "expected_amplification": expected.token_amplification,
                        "measured_amplification": measured,
                        "ratio": measured / expected.token_amplification,
                    }
                )
    finally:
        await deployment.stop()
    table = Table(title=f"token amplification, {tasks} synthetic tasks per pattern")
    for column in (
        "agent",
        "calls/task",
        "tools/task",
        "prompt:completion",
        "prefix hits",
        "expected amp.",
        "measured amp.",
        "measured/expected",
    ):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for row in rows:
        table.add_row(
            str(row["agent"]),
            f"{row['calls_per_task']:.2f}",
            f"{row['tool_calls_per_task']:.2f}",
            f"{row['prompt_to_completion']:.1f}:1",
            f"{row['prefix_hit_rate']:.0%}",
            f"{row['expected_amplification']:.1f}x",
            f"{row['measured_amplification']:.1f}x",
            f"{row['ratio']:.3f}",
        )
    console.print(table)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32, help="tasks per pattern")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    out = asyncio.run(main(args.tasks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
