"""The OpenAI target's unit suites, which run Locust users in-process (gevent's monkey
patches), each in a pytest process of its own (tests/conftest.py, GEVENT_SUITES)."""

from __future__ import annotations

from tests.conftest import run_gevent_suite


def test_openai_target_unit_suites_pass_in_their_own_process() -> None:
    run_gevent_suite("unit", timeout_s=300)
