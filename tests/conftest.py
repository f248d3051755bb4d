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
