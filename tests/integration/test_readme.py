"""The README's SDK examples, run verbatim against the live server (only the address is
replaced)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def _sdk_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## The SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_sdk_examples() -> None:
    assert len(_sdk_examples()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_readme_sdk_example_runs(live_server, index: int) -> None:  # type: ignore[no-untyped-def]
    code = _sdk_examples()[index].replace("127.0.0.1:50051", live_server.address)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md SDK example {index + 1}", "exec"), {})
    printed = out.getvalue()
    if index == 0:
        assert re.search(r"^5 calls, \d+\.\dx amplification$", printed, flags=re.M), printed
        assert "prefix hit rate" in printed
    else:
        assert "synthesizer 64 tokens" in printed
        assert "answer tokens: 64" in printed
        assert "output_tokens=8" in printed
