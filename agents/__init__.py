"""Agent programs as data: the DSL, distributions, tools and the built-in library.

Importing this package must stay light (no Ray, vLLM or grpc servers): the SDK and the
load generator import it.
"""

from agents.dsl import Join, JoinKind, Llm, Loop, Parallel, Program, ProgramError, Tool
from agents.library import BUILTIN_PROGRAMS, plan_execute

__all__ = [
    "BUILTIN_PROGRAMS",
    "Join",
    "JoinKind",
    "Llm",
    "Loop",
    "Parallel",
    "Program",
    "ProgramError",
    "Tool",
    "plan_execute",
]
