"""Generate loadtests/data/sample_trace.jsonl: a small Mooncake-format trace for tests.

    python loadtests/data/make_sample_trace.py   # rewrites the file; same bytes every run

200 requests over 60 s (Poisson arrivals). Each request continues one of 12 sessions:
a session's requests share its system prompt blocks and every earlier turn's blocks, the
shape that makes agent and chat traces cache-friendly (Mooncake's tool-and-agent trace:
most prompt tokens hit the prefix cache). Inputs stay under 8k tokens and outputs under
256 so the trace fits the simulated engine's default 16k context.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

REQUESTS = 200
DURATION_MS = 60_000
SESSIONS = 12
BLOCK = 512
MAX_INPUT = 8_000
SEED = 20250226
OUT = Path(__file__).resolve().parent / "sample_trace.jsonl"


def lines() -> list[str]:
    rng = random.Random(SEED)
    next_id = 0

    def new_blocks(n: int) -> list[int]:
        nonlocal next_id
        ids = list(range(next_id, next_id + n))
        next_id += n
        return ids

    system = [new_blocks(rng.randint(1, 4)) for _ in range(SESSIONS // 3)]
    # Sessions come in groups that share a system prompt; each grows its own history.
    history = [list(system[s % len(system)]) for s in range(SESSIONS)]
    gaps = [rng.expovariate(1.0) for _ in range(REQUESTS)]
    scale = DURATION_MS / sum(gaps)
    out, t = [], 0.0
    for gap in gaps:
        session = rng.randrange(SESSIONS)
        if len(history[session]) * BLOCK > MAX_INPUT - 2 * BLOCK:
            history[session] = list(system[session % len(system)])  # a new conversation
        turn = new_blocks(rng.randint(1, 2))
        blocks = history[session] + turn
        # The last block is partial: the prompt ends mid-block, as real prompts do.
        input_length = len(blocks) * BLOCK - rng.randrange(BLOCK)
        history[session] = blocks
        record = {
            "timestamp": round(t),
            "input_length": input_length,
            "output_length": rng.randint(16, 255),
            "hash_ids": blocks,
        }
        out.append(json.dumps(record, separators=(", ", ": ")))
        t += gap * scale
    return out


def main() -> None:
    OUT.write_text("\n".join(lines()) + "\n")


if __name__ == "__main__":
    main()
