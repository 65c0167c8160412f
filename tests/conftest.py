"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository (../shared/data); tests using them skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent: expected the real datasets in {SHARED_DATA}")
    return SHARED_DATA
