"""Fixtures of the real/ tests: a fake clock, the push task behind the MuJoCo-backed driver in
lock-step (in-process, advanced by the fake clock), and a small steerable policy for it."""

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from robot_rl.core.policy import SteerableChunkPolicy, batch_size  # noqa: E402


class FakeClock:
    """Monotonic seconds that move only when someone sleeps: runs are exact and instant."""

    def __init__(self, t: float = 100.0):
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        with self._lock:
            self.t += max(dt, 0.0)


class PushUp(SteerableChunkPolicy):
    """Pushes mostly +y; deterministic given its noise."""

    action_dim, horizon, n_action_steps, n_obs_steps = 2, 8, 4, 2
    noise_shape = (8, 2)

    def predict_chunk(self, obs, noise=None):
        b = batch_size(obs)
        if noise is None:
            noise = np.random.default_rng(0).standard_normal((b, *self.noise_shape))
        return np.tanh(0.3 * np.asarray(noise) + np.array([0.0, 1.0])).astype(np.float32)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def push_task():
    from robot_rl import config

    return config.load_job("eval", config.EvalJob, ["task=push"]).task.build()
