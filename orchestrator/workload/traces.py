"""Trace files, in two formats; a malformed one raises TraceError naming the file and
line(s).

Arrival traces (`inflection simulate`, `arrival: {process: trace}`; `read_trace`): JSONL,
one task per line, `{"timestamp": 1200, "agent": "react", "input_length": 300}`
(milliseconds; `agent` and `input_length` optional).

Mooncake traces (`inflection load --trace`; `load_mooncake_trace`) give each request a
prompt and an arrival time; the load generator replays them with the `Generate` RPC.
Their format (Mooncake, FAST'25) is JSONL, one request a line:

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, ...]}

`timestamp` is milliseconds from the trace's start; `hash_ids` name the request's prompt
in 512-token blocks, so two requests whose `hash_ids` start alike share that prompt
prefix. We rebuild prompts with that property: the tokens of block `h` are a fixed
function of `h` (a generator seeded with `h`), a prompt is its blocks' tokens in order,
cut (or padded with tokens unique to the line) to exactly `input_length`. Requests that
share k leading blocks therefore share exactly their first 512*k prompt tokens, and a
prefix-caching engine sees the hit rate the trace implies.

Malformed Mooncake lines never stop at the first: `load_mooncake_trace` checks every line
and raises one `TraceError` naming the file and the first few bad line numbers.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from orchestrator.workload.arrivals import Arrival


class TraceError(ValueError):
    """A trace that cannot be used; the message names the file and line number(s)."""


def read_trace(path: Path, speedup: float, duration_s: float) -> Iterator[Arrival]:
    """A trace's arrivals within [0, duration_s), in time order (a trace need not be
    sorted); raises TraceError naming the file and line of a malformed entry."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    entries: list[Arrival] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            at = float(row["timestamp"]) / 1000.0 / speedup
            agent = row.get("agent")
            length = row.get("input_length")
            if at < 0 or (length is not None and int(length) < 1):
                raise ValueError("negative timestamp or input_length < 1")
            if agent is not None and not isinstance(agent, str):
                raise ValueError("agent must be a string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{path}:{number}: bad trace line ({exc})") from None
        if at < duration_s:
            entries.append(Arrival(at, agent, int(length) if length is not None else None))
    entries.sort(key=lambda a: a.at)
    yield from entries


# ---- Mooncake traces ---------------------------------------------------------------

MOONCAKE_BLOCK_TOKENS = 512  # Mooncake's hash block size
DEFAULT_VOCAB = 32_000  # below every catalog model's vocabulary (llama-2's is 32,000)
MAX_REPORTED = 5  # bad lines named in a TraceError message
_UNIQUE_SALT = 0x5EED  # seeds a line's own padding tokens apart from any block's


@dataclass(slots=True, frozen=True)
class TraceRequest:
    """One line of the trace."""

    line: int  # 1-based line number in the file (error messages, unique padding seed)
    timestamp_s: float  # arrival, seconds from the trace's own zero (file: milliseconds)
    input_length: int  # prompt tokens, exactly
    output_length: int  # tokens to generate (sent as max_tokens with ignore_eos)
    hash_ids: tuple[int, ...]  # ids of the prompt's 512-token blocks, in order


def parse_line(text: str, line: int) -> TraceRequest:
    """One JSON line; raises ValueError with a reason (no file or line number)."""
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    missing = [
        k for k in ("timestamp", "input_length", "output_length", "hash_ids") if k not in raw
    ]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    timestamp = raw["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError(f"timestamp: expected milliseconds, got {timestamp!r}")
    if not math.isfinite(timestamp) or timestamp < 0:
        raise ValueError(f"timestamp: must be a finite number >= 0, got {timestamp!r}")
    input_length = _count(raw["input_length"], "input_length")
    output_length = _count(raw["output_length"], "output_length")
    hash_ids = raw["hash_ids"]
    if not isinstance(hash_ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in hash_ids
    ):
        raise ValueError("hash_ids: expected a list of non-negative integers")
    needed = math.ceil(input_length / MOONCAKE_BLOCK_TOKENS)
    if len(hash_ids) > needed:
        raise ValueError(
            f"hash_ids: {len(hash_ids)} blocks of {MOONCAKE_BLOCK_TOKENS} tokens for "
            f"input_length {input_length} (at most {needed})"
        )
    return TraceRequest(
        line, float(timestamp) / 1000.0, input_length, output_length, tuple(hash_ids)
    )


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def parse_lines(lines: Iterable[str], source: str) -> list[TraceRequest]:
    """Every request of the trace, sorted by timestamp; blank lines are skipped. Raises
    TraceError listing the first bad lines if any line is malformed (all are checked)."""
    requests: list[TraceRequest] = []
    bad: list[str] = []
    count = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            requests.append(parse_line(text, number))
        except ValueError as exc:
            count += 1
            if len(bad) < MAX_REPORTED:
                bad.append(f"line {number}: {exc}")
    if count:
        more = f" (and {count - len(bad)} more)" if count > len(bad) else ""
        plural = "s" if count > 1 else ""
        raise TraceError(f"{source}: {count} malformed line{plural}: {'; '.join(bad)}{more}")
    if not requests:
        raise TraceError(f"{source}: the trace has no requests")
    requests.sort(key=lambda r: (r.timestamp_s, r.line))
    return requests


def load_mooncake_trace(path: str | PathLike[str]) -> list[TraceRequest]:
    """Read a Mooncake JSONL trace file (see the module docstring)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_lines(f, str(path))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None


@functools.lru_cache(maxsize=4096)
def block_tokens(hash_id: int, vocab_size: int = DEFAULT_VOCAB) -> npt.NDArray[np.int64]:
    """The 512 tokens of block `hash_id`: the same ids in every process and run."""
    rng = np.random.default_rng([hash_id, vocab_size])
    tokens = rng.integers(1, vocab_size, size=MOONCAKE_BLOCK_TOKENS, dtype=np.int64)
    tokens.flags.writeable = False  # cached and shared: never modified in place
    return tokens


def prompt_tokens(request: TraceRequest, vocab_size: int = DEFAULT_VOCAB) -> list[int]:
    """The request's prompt: its blocks' tokens in order, exactly `input_length` long.
    Tokens past the listed blocks (a trace listing fewer blocks than the length needs)
    are unique to the line, so they never fake a cache hit."""
    if vocab_size < 2:
        raise ValueError(f"vocab size must be at least 2, got {vocab_size}")
    parts = [block_tokens(h, vocab_size) for h in request.hash_ids]
    covered = len(parts) * MOONCAKE_BLOCK_TOKENS
    if covered < request.input_length:
        rng = np.random.default_rng([_UNIQUE_SALT, request.line, vocab_size])
        parts.append(rng.integers(1, vocab_size, size=request.input_length - covered))
    return [int(t) for t in np.concatenate(parts)[: request.input_length]]


def arrival_offsets(requests: Sequence[TraceRequest], speedup: float = 1.0) -> list[float]:
    """Seconds from the replay's start at which each request is sent: the trace's own
    gaps (from its first request) divided by `speedup`."""
    if not (math.isfinite(speedup) and speedup > 0):
        raise ValueError(f"speed-up must be a positive number, got {speedup}")
    if not requests:
        return []
    start = requests[0].timestamp_s
    return [(r.timestamp_s - start) / speedup for r in requests]


def shared_prefix_tokens(a: TraceRequest, b: TraceRequest) -> int:
    """Prompt tokens two requests share by construction (whole leading blocks in common,
    clipped to the shorter prompt): what a prefix cache can reuse between them."""
    blocks = 0
    for x, y in zip(a.hash_ids, b.hash_ids, strict=False):
        if x != y:
            break
        blocks += 1
    return min(blocks * MOONCAKE_BLOCK_TOKENS, a.input_length, b.input_length)
