"""The locustfile's import chain: locust (gevent's patches) first, and never Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_locustfile_imports_no_ray_and_patches_first() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('error'); "
        "import loadtests.locustfile; "
        "from gevent import monkey; "
        "heavy = [m for m in ('ray', 'vllm', 'torch') if m in sys.modules]; "
        "print(','.join(heavy), monkey.is_module_patched('ssl'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
    )
    # No MonkeyPatchWarning (an error here): nothing imported ssl before locust patched it.
    assert out.stdout.strip() == "True"


def test_pure_modules_do_not_import_locust() -> None:
    code = (
        "import sys, loadtests.metrics, loadtests.workload, loadtests.arrivals, "
        "loadtests.shapes, loadtests.state, loadtests.sweep_curve, loadtests.cli; "
        "print('locust' in sys.modules or 'ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


def test_collecting_the_suite_applies_no_gevent_patches() -> None:
    # A test module importing locust at collection would patch threads into greenlets
    # for the whole session and hang Ray and the live server (tests/conftest.py).
    code = (
        "import pytest, sys; "
        "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests']); "
        "from gevent import monkey; "
        "print(monkey.is_module_patched('threading'), 'locust' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout[-3000:]
