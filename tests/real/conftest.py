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


def tiny_push_diffusion(path):
    """A small untrained diffusion checkpoint for push (state [10], action [2], Ta 4)."""
    import torch

    from robot_rl.policies import DiffusionPolicy, DiffusionPolicyConfig, Normalizer, save_policy

    torch.manual_seed(0)
    config = DiffusionPolicyConfig(
        obs_shapes={"state": (10,)},
        action_dim=2,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        down_dims=(16, 32),
        step_embed_dim=16,
    )
    stats = {
        "state": {
            k: np.full(10, v, np.float32)
            for k, v in (("min", -1), ("max", 1), ("mean", 0), ("std", 0.5))
        },
        "action": {"min": -np.ones(2, np.float32), "max": np.ones(2, np.float32)},
    }
    return save_policy(
        DiffusionPolicy(config, Normalizer.from_stats(stats, config.norm_modes)), path
    )


@pytest.fixture(scope="session")
def tiny_diffusion(tmp_path_factory):
    """One tiny diffusion checkpoint for every test (building one takes seconds)."""
    return tiny_push_diffusion(tmp_path_factory.mktemp("tiny_diffusion") / "base")
