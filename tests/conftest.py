"""Shared fixtures. ``tests/toys.py`` holds the toy environment and policies."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toys import toy_task_config  # noqa: E402


@pytest.fixture
def toy_task():
    return toy_task_config()
