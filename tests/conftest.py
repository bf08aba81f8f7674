"""Shared fixtures. Real records come from ``$SUPREME_SHARED_DATA`` (default ``../shared/data``)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SUPREME_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real ECG records not found at {path} (set SUPREME_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require("")


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    return _require("ptbxl")


@pytest.fixture(scope="session")
def cinc2021_dir() -> Path:
    return _require("cinc2021")


@pytest.fixture(scope="session")
def snomed_dir() -> Path:
    return _require("snomed")
