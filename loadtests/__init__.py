"""Agentic load generation with Locust against an Inflection orchestrator.

`locust -f loadtests/locustfile.py --host HOST:PORT --workload loadtests/examples/mix.yaml`
runs it; `inflection load` (`cli`: `options`, `local_server`, `locust_run`, `console`,
`sweep_run`) runs it headless in a subprocess. What it shares with the simulator (arrival
processes, traces, the workload mix, the SLO, the sweep plan) is `orchestrator.workload`.
The pure modules (`metrics`, `state`, `workload`, `arrivals`, `shapes`, `sweep_curve`)
import neither locust nor Ray; `user`, `trace_user` and `locustfile` import locust first,
for gevent's patches. This package file imports nothing, so importing any of them stays
as light as it says.
"""
