"""Agent programs as data: the DSL and the built-in library.

Importing this package must stay light (no Ray, vLLM or grpc servers): the SDK and the
load generator import it.
"""

from agents.library import BUILTIN_PROGRAMS, plan_execute
from agents.program import LlmStep, Program, ProgramError

__all__ = ["BUILTIN_PROGRAMS", "LlmStep", "Program", "ProgramError", "plan_execute"]
