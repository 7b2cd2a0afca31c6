"""The reliability suite (issue 13, item 5): failure scenarios run against real
deployments, each asserting its bound and recording the figures the README's
"Reliability" table quotes. See conftest.py for how a scenario records a figure."""
