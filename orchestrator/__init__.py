"""Inflection: an agentic workload orchestrator and load generator.

Importing this package (or `orchestrator.client`, the SDK) stays light: Ray, vLLM and the
gRPC server are imported only by the modules that need them.
"""
