"""Real tools that agent programs' tool steps call by name, and their registry.

A tool step names a tool (`agents.dsl.Tool.tool`); the executor looks it up with
`get_tool` and calls `Tool.run` in a worker thread. Tools never raise: failures come back
as `ToolResult(ok=False, text="error: ...")`. Built-in tools:

- `calculator`: safe arithmetic on one expression (agents.tools.calculator);
- `search`: BM25 keyword search over a small bundled corpus (agents.tools.search);
- `python`: Python code in a resource-limited subprocess (agents.tools.sandbox).

Importing this package is cheap: the search corpus is read on first use, and the Python
sandbox starts a process only when it runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.tools.base import Tool, ToolError, ToolResult
from agents.tools.calculator import CalculatorTool
from agents.tools.sandbox import PythonTool
from agents.tools.search import SearchTool


class UnknownToolError(KeyError):
    """A tool name that is not registered; the message lists the names that are."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        self.message = f"unknown tool {name!r}; known tools: {', '.join(self.known)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's own __str__ would show the message quoted like a key.
        return self.message


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool for tool in (CalculatorTool(), SearchTool(), PythonTool())
}


def get_tool(name: str) -> Tool:
    """The built-in tool called `name`; raises UnknownToolError listing the known names."""
    try:
        return BUILTIN_TOOLS[name]
    except KeyError:
        raise UnknownToolError(name, BUILTIN_TOOLS) from None


__all__ = [
    "BUILTIN_TOOLS",
    "CalculatorTool",
    "PythonTool",
    "SearchTool",
    "Tool",
    "ToolError",
    "ToolResult",
    "UnknownToolError",
    "get_tool",
]
