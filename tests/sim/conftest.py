"""Fixtures for the sim tests; helpers live in ``sim_helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import pytest
from sim_helpers import load_task

from robot_rl.core.task import make_env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "robosuite: needs the robosuite extra; slow to build")


@pytest.fixture(scope="session")
def robosuite_env() -> Iterator[gym.Env]:
    """One robosuite Lift environment for the whole session: building one takes seconds."""
    pytest.importorskip("robosuite")
    env = make_env(load_task("robosuite_lift"))
    yield env
    env.close()
