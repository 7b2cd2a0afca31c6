"""Importing the SDK or the agent DSL must not import Ray, vLLM or the server."""

from __future__ import annotations

import subprocess
import sys


def test_sdk_and_agents_import_light() -> None:
    code = (
        "import sys, orchestrator.client, agents; "
        "heavy = [m for m in ('ray', 'vllm', 'torch', 'transformers', "
        "'orchestrator.server.servicer') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
