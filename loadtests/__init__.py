"""Agentic load generation with Locust against an Inflection orchestrator.

`locust -f loadtests/locustfile.py --host HOST:PORT --workload loadtests/examples/mix.yaml`
runs it. The pure modules (`metrics`, `workload`, `arrivals`, `shapes`) import neither
locust nor Ray; `user` and `locustfile` import locust first, for gevent's patches. This
package file imports nothing, so importing any of them stays as light as it says.
"""
