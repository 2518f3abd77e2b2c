"""Stable-Baselines3 SAC as the baseline users would otherwise reach for: a Gaussian policy in
raw action space, trained from scratch on the same task, reward and env-step budget."""

from __future__ import annotations

import time
from dataclasses import replace

import gymnasium as gym
import numpy as np

from robot_rl.core import keys
from robot_rl.core.policy import ChunkPolicy
from robot_rl.core.task import TaskConfig, make_env
from robot_rl.eval.rollout import evaluate


def _stable_baselines3():
    try:
        import stable_baselines3
    except ImportError as err:
        raise ImportError(
            "the SB3 baseline needs stable-baselines3: pip install 'robot-rl[baselines]'"
        ) from err
    return stable_baselines3


class StateOnly(gym.ObservationWrapper):
    """``{"state": [D]}`` -> ``[D]`` for learners that take flat observations."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = env.observation_space[keys.STATE]

    def observation(self, observation):
        return observation[keys.STATE]


class SB3Policy(ChunkPolicy):
    """An SB3 model as a one-step chunk policy, so it is evaluated by the same code."""

    def __init__(self, model, action_dim: int):
        self.model, self.action_dim = model, action_dim
        self.horizon = self.n_action_steps = self.n_obs_steps = 1

    def predict_chunk(self, obs):
        action, _ = self.model.predict(obs[keys.STATE][:, -1], deterministic=True)
        return np.asarray(action, np.float32)[:, None]


def sb3_sac_run(
    task: TaskConfig,
    env_steps: int,
    seed: int,
    eval_every: int,
    eval_episodes: int,
    reward_type: str = "sparse",
    hidden=(256, 256),
    warmup: int = 2_000,
) -> dict:
    """Train SB3 SAC for ``env_steps`` steps (one update per step), evaluating on a schedule."""
    sb3 = _stable_baselines3()
    from stable_baselines3.common.callbacks import BaseCallback

    train_task = replace(task, env_kwargs={**task.env_kwargs, "reward_type": reward_type})
    env = StateOnly(make_env(train_task))
    model = sb3.SAC(
        "MlpPolicy",
        env,
        learning_starts=warmup,
        batch_size=256,
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": list(hidden)},
        verbose=0,
    )
    policy = SB3Policy(model, int(np.prod(env.action_space.shape)))
    curve: dict[str, list] = {"env_steps": [], "success": []}
    updates = {"n": 0, "wall": 0.0}

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                r = evaluate(policy, task, min(eval_episodes, 50), 16, 20_000, progress=False)
                curve["env_steps"].append(self.num_timesteps)
                curve["success"].append(r.success_rate)
            return True

    original_train = model.train

    def timed_train(gradient_steps: int, batch_size: int = 64) -> None:
        start = time.perf_counter()
        original_train(gradient_steps=gradient_steps, batch_size=batch_size)
        updates["wall"] += time.perf_counter() - start
        updates["n"] += gradient_steps

    model.train = timed_train
    start = time.perf_counter()
    model.learn(total_timesteps=env_steps, callback=Evaluate())
    wall = time.perf_counter() - start
    final = evaluate(policy, task, eval_episodes, 16, 20_000, progress=False)
    steps_to_90 = next(
        (s for s, r in zip(curve["env_steps"], curve["success"], strict=False) if r >= 0.9), None
    )
    env.close()
    return {
        "seed": seed,
        "base_success": 0.0,
        "final_success": final.success_rate,
        "final_success_ci95": list(final.success_ci95),
        "env_steps_to_90": steps_to_90,
        "env_steps": env_steps,
        "wall_s": wall,
        "updates_per_s": updates["n"] / max(updates["wall"], 1e-9),
        "curve": curve,
    }


def sb3_update_timer(obs_dim: int, act_dim: int, hidden=(256, 256)):
    """A function ``n -> seconds`` that runs ``n`` SB3 SAC gradient updates at batch 256,
    sampling from a replay buffer of random transitions (SB3's own ``train``)."""
    sb3 = _stable_baselines3()
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    dummy = _DummyEnv(space, gym.spaces.Box(-1, 1, (act_dim,), np.float32))
    model = sb3.SAC(
        "MlpPolicy", dummy, batch_size=256, device="cpu", policy_kwargs={"net_arch": list(hidden)}
    )
    model._setup_learn(total_timesteps=1)  # builds the logger that train() writes to
    rng = np.random.default_rng(0)
    for _ in range(1024):
        obs = rng.standard_normal((1, obs_dim)).astype(np.float32)
        model.replay_buffer.add(
            obs, obs, rng.uniform(-1, 1, (1, act_dim)), rng.standard_normal(1), np.zeros(1), [{}]
        )
    model.train(gradient_steps=20, batch_size=256)

    def run(n: int) -> float:
        start = time.perf_counter()
        model.train(gradient_steps=n, batch_size=256)
        return time.perf_counter() - start

    return run


class _DummyEnv(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, True, {}
