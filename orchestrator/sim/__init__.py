"""The simulated GPU engine: catalogs, the roofline step-time model, a continuous-batching
scheduler modelled on vLLM V1, the fast-forward cluster simulation and the capacity
planner (docs/simulation.md has the model and its sources)."""
