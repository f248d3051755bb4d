"""Shared fixtures: where the real models live, and skipping when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_MODELS = ROOT / "tests" / "data" / "models"
# Real pre-trained models are test data we may not commit; CI lays them beside the repo.
SHARED_MODELS = Path(os.environ.get("EDGED_SHARED_MODELS", ROOT.parent / "shared" / "models"))


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "README.md").is_file():
        pytest.skip(f"shared models not present at {SHARED_MODELS}")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def test_models() -> Path:
    return TEST_MODELS

# The real-mosquitto fixtures (mosquitto, mosquitto_factory, tls_files) for every test.
pytest_plugins = ["broker"]


# A skip is fine when a machine lacks what a test needs (the shared models, a
# tool); a skip that hides an error (an import that failed) is a failure in CI.
_SKIP_IS_ERROR = ("could not import", "No module named", "Error", "error", "not generated",
                  "not present yet")
_bad_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(word in reason for word in _SKIP_IS_ERROR):
            _bad_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _bad_skips and os.environ.get("CI"):
        print("\nskipped by error (fails in CI):\n  " + "\n  ".join(_bad_skips))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
