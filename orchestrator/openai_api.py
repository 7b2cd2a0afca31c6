"""What both clients of OpenAI-compatible servers send besides reading the stream: the
streaming `/v1/completions` request body.

Pure, no I/O: the orchestrator's `backend: openai` (orchestrator.replicas.openai_engine)
and the load generator's OpenAI target (loadtests.openai_http) build their requests with
it; the streams themselves are folded by
orchestrator.openai_stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.domain import Sampling


def sampling_fields(sampling: Sampling, priority: int | None = None) -> dict[str, Any]:
    """The fields of a streaming request that are not its prompt: sampling, streaming
    with a final usage chunk, and vLLM's extensions when asked for."""
    body: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if sampling.ignore_eos:
        body["ignore_eos"] = True  # vLLM / SGLang: exactly max_tokens (synthetic mode)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if priority is not None:
        body["priority"] = priority  # vLLM's priority scheduler: lower is served first
    return body


def completions_body(
    model: str, prompt_ids: Sequence[int], sampling: Sampling, priority: int | None = None
) -> dict[str, Any]:
    """A streaming /v1/completions request with a token-id prompt; vLLM returns each
    delta's token ids (`return_token_ids`), so an agent's context grows by exact ids.
    `priority` None: the field is left out (vLLM refuses a nonzero one unless it runs
    its priority scheduler)."""
    return {
        "model": model,
        "prompt": list(prompt_ids),
        "return_token_ids": True,
        **sampling_fields(sampling, priority),
    }
