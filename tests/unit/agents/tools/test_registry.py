"""The tool registry: built-in names, lookup errors, the never-raise contract, import weight."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from agents.tools import BUILTIN_TOOLS, Tool, ToolResult, UnknownToolError, get_tool


def test_builtin_tools_are_registered_under_their_names() -> None:
    assert set(BUILTIN_TOOLS) == {"calculator", "search", "python"}
    for name, tool in BUILTIN_TOOLS.items():
        assert isinstance(tool, Tool)
        assert tool.name == name
        assert tool.description
        assert get_tool(name) is tool


def test_unknown_tool_error_lists_known_names() -> None:
    with pytest.raises(UnknownToolError) as caught:
        get_tool("web_browser")
    message = str(caught.value)
    assert "web_browser" in message
    assert "calculator, python, search" in message
    assert isinstance(caught.value, KeyError)
    assert caught.value.known == ("calculator", "python", "search")


@pytest.mark.parametrize("name", ["calculator", "search", "python"])
@pytest.mark.parametrize("argument", ["", "   ", "\0", "```", "?!"])
def test_tools_report_bad_input_instead_of_raising(name: str, argument: str) -> None:
    result = get_tool(name).run(argument, time_limit_s=2.0)
    assert isinstance(result, ToolResult)
    assert not result.ok
    assert result.text.startswith("error: ")
    assert result.elapsed_s >= 0.0


async def test_tools_run_concurrently_in_worker_threads() -> None:
    # The executor's way of calling tools: asyncio.to_thread, several at once.
    results = await asyncio.gather(
        asyncio.to_thread(get_tool("calculator").run, "6*7", time_limit_s=1.0),
        asyncio.to_thread(get_tool("search").run, "speculative decoding", time_limit_s=1.0),
        *(
            asyncio.to_thread(get_tool("python").run, f"print({i} * 2)", time_limit_s=5.0)
            for i in range(3)
        ),
    )
    assert [r.ok for r in results] == [True] * 5
    assert results[0].text == "42"
    assert results[1].text.startswith("[Speculative decoding]")
    assert [r.text for r in results[2:]] == ["0\n", "2\n", "4\n"]


def test_importing_tools_is_light() -> None:
    code = (
        "import sys, agents.tools, agents.tools.search as s; "
        "heavy = [m for m in ('ray', 'vllm', 'torch', 'grpc') if m in sys.modules]; "
        "print(','.join(heavy), s._index is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    # Nothing heavy imported, and the search corpus is not read until first use.
    assert out.stdout.strip() == "True"
