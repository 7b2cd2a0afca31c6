"""The OpenAI target against vLLM's own OpenAI server, which runs Locust users in-process
(gevent's monkey patches), in a pytest process of its own (tests/conftest.py,
GEVENT_SUITES)."""

from __future__ import annotations

import pytest

from tests.conftest import run_gevent_suite

pytestmark = pytest.mark.slow


def test_openai_target_integration_suite_passes_in_its_own_process() -> None:
    run_gevent_suite("integration", timeout_s=900)
