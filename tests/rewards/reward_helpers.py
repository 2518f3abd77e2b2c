"""A toy camera task and tiny stores and models for the reward tests."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.core.reward import RewardModel
from robot_rl.data.store import EpisodeStore

CAM_ID = "robot_rl_test/ToyCamera-v0"
SIZE = 16


def frame_of(x: float) -> np.ndarray:
    """A dark frame with a bright column at x in [-1, 1]; success frames (x >= 0.5) also
    light a marker in the corner, so a classifier has something plain to find."""
    frame = np.full((SIZE, SIZE, 3), 20, np.uint8)
    frame[:, int(np.clip((x + 1) / 2 * (SIZE - 1), 0, SIZE - 1))] = 200
    if x >= 0.5:
        frame[:4, :4, 1] = 255
    return frame


class ToyCamera(gym.Env):
    """A point on a line moves by 0.25 * action per step; success at x >= 0.5."""

    def __init__(self, terminate_on_success: bool = True):
        self.terminate_on_success = terminate_on_success
        self.observation_space = spaces.Dict(
            {
                "state": spaces.Box(-5, 5, (2,), np.float32),
                "image.cam": spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            }
        )
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.3, 0.0))
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.x += 0.25 * float(action[0])
        success = self.x >= 0.5
        terminated = success and self.terminate_on_success
        return self._obs(), float(success), terminated, False, {"is_success": success}

    def _obs(self):
        return {"state": np.array([self.x, 0.0], np.float32), "image.cam": frame_of(self.x)}


if CAM_ID not in gym.registry:
    gym.register(CAM_ID, entry_point=ToyCamera, max_episode_steps=10)


class StateReward(RewardModel):
    """Reward = the latest state's x; counts calls and frames (to check batching)."""

    required_keys = ("state",)

    def __init__(self):
        self.calls, self.batches = 0, []

    def __call__(self, obs):
        self.check_obs(obs)
        state = np.asarray(obs["state"])
        state = state[:, -1] if state.ndim == 3 else state
        self.calls += 1
        self.batches.append(len(state))
        return state[:, 0].astype(np.float32)


def write_store(path, episodes: int = 12, seed: int = 0) -> EpisodeStore:
    """Episodes of the toy camera task without termination: half walk right (success from
    x >= 0.5 on), half dither in place (never succeed)."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, task="toy", fps=10, source="test", robot="toy")
    for e in range(episodes):
        x = float(rng.uniform(-0.3, 0.0))
        speed = 0.25 if e % 2 == 0 else 0.0
        xs, succ = [], []
        for _ in range(8):
            xs.append(x)
            x += speed + float(rng.normal(0, 0.02))
            succ.append(x >= 0.5)
        episode = {
            "image.cam": np.stack([frame_of(v) for v in xs]),
            "state": np.array([[v, 0.0] for v in xs], np.float32),
            "action": np.zeros((8, 1), np.float32),
            "reward": np.asarray(succ, np.float32),
            "is_success": np.asarray(succ),
        }
        store.append_episode(episode)
    return store
