"""The deep profile lifts pytest's per-test timeout (tests/conftest.py,
pytest_collection_modifyitems), so its long hypothesis runs are not stopped part-way; the quick
profile keeps each test's own limit."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def test_this_test_runs_under_the_timeout_its_profile_gives(request):
    expected = float(os.environ.get("EXPECTED_TIMEOUT", "60"))
    assert request.node.get_closest_marker("timeout").args[0] == expected


def test_under_the_deep_profile_a_short_timeout_becomes_the_deep_one():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, HYPOTHESIS_PROFILE="deep", DEEP_TEST_TIMEOUT="777", EXPECTED_TIMEOUT="777")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{here}/test_deep_profile_timeout.py::"
                          "test_this_test_runs_under_the_timeout_its_profile_gives"],
                         env=env, cwd=os.path.dirname(here), capture_output=True, text=True, timeout=50)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
