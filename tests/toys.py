"""Tiny stand-ins that follow the core contracts: an environment and chunk policies."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.core.policy import ChunkPolicy, SteerableChunkPolicy, batch_size, check_noise
from robot_rl.core.task import TaskConfig

TOY_ID = "robot_rl_test/ToyReach-v0"


class ToyReach(gym.Env):
    """A point on a line moves by 0.25 * action per step and must reach x >= 1. Its reward is
    1 on success (``reward_type="sparse"``), or shaped 0.5 * x below the goal (``"dense"``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None, reward_type="sparse"):
        self.render_mode, self.reward_type = render_mode, reward_type
        self.observation_space = spaces.Dict({"state": spaces.Box(-5, 5, (2,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.2, 0.2))
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.x += 0.25 * float(action[0])
        self.t += 1
        success = self.x >= 1.0
        reward = float(success) if self.reward_type == "sparse" or success else 0.5 * self.x
        return self._obs(), reward, success, False, {"is_success": success}

    def render(self):
        frame = np.zeros((16, 16, 3), np.uint8)
        frame[:, int(np.clip((self.x + 1) * 7, 0, 15))] = 255
        return frame

    def _obs(self):
        return {"state": np.array([self.x, self.t / 20], np.float32)}


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=ToyReach, max_episode_steps=12)


class ConstantPolicy(ChunkPolicy):
    """Always pushes with the same action; stands in for a learned policy."""

    def __init__(
        self, value: float, horizon: int = 4, n_action_steps: int = 2, n_obs_steps: int = 2
    ):
        self.value, self.action_dim = value, 1
        self.horizon, self.n_action_steps, self.n_obs_steps = horizon, n_action_steps, n_obs_steps

    def predict_chunk(self, obs):
        b = obs["state"].shape[0]
        return np.full((b, self.horizon, 1), self.value, np.float32)


class ToySteerable(SteerableChunkPolicy):
    """chunk = tanh(noise + bias): deterministic given noise; with N(0, I) noise and a negative
    bias it mostly fails ToyReach, while noise near +bound succeeds."""

    def __init__(self, bias: float = -0.6):
        self.action_dim, self.horizon, self.n_action_steps, self.n_obs_steps = 1, 4, 2, 2
        self.noise_shape = (4, 1)
        self.bias = bias
        self.rng = np.random.default_rng(0)

    def predict_chunk(self, obs, noise=None):
        b = batch_size(obs)
        if noise is None:
            noise = self.rng.standard_normal((b, *self.noise_shape))
        noise = check_noise(noise, b, self.noise_shape)
        return np.tanh(noise + self.bias).astype(np.float32)


def toy_task_config() -> TaskConfig:
    return TaskConfig(name="toy", env_id=TOY_ID, register_module="gymnasium")


def tiny_diffusion(
    state_dim: int,
    action_dim: int,
    horizon: int,
    n_action_steps: int,
    state_max: float = 1.0,
    inference_steps: int = 2,
):
    """A small untrained diffusion policy (``inference_steps`` DDIM steps over 10 train steps)
    on these shapes, state normalised from [-1, state_max], actions in [-1, 1]."""
    from robot_rl.policies import DiffusionPolicy, DiffusionPolicyConfig, Normalizer

    config = DiffusionPolicyConfig(
        obs_shapes={"state": (state_dim,)},
        action_dim=action_dim,
        horizon=horizon,
        n_action_steps=n_action_steps,
        n_obs_steps=2,
        down_dims=(8,),
        step_embed_dim=8,
        num_train_timesteps=10,
        num_inference_steps=inference_steps,
    )
    one = np.ones(state_dim, np.float32)
    act = np.ones(action_dim, np.float32)
    stats = {
        "state": {"min": -one, "max": state_max * one, "mean": 0 * one, "std": one},
        "action": {"min": -act, "max": act},
    }
    return DiffusionPolicy(config, Normalizer.from_stats(stats, config.norm_modes))
