"""Policy rollouts into the episode store: the "base-policy rollouts" a world model learns
from beside the demonstrations (a model trained on expert data only has never seen the
mistakes that an improver must learn to avoid).

Every step's raw observation, action, reward, ``is_success`` and ``terminated`` are stored the
way ``robot-rl collect`` stores expert episodes, so the two kinds of episodes mix in one store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.envs import ChunkedEnv, ObservationHistory, make_vector_env, step_info
from robot_rl.core.policy import ChunkPolicy
from robot_rl.core.task import TaskConfig, make_env
from robot_rl.data import EpisodeStore


class _Recorder(ChunkedEnv):
    """A chunked environment that also records its episodes; the last finished one is
    ``last_episode`` (an info dict would be merged key by key across sub-environments)."""

    last_episode: dict[str, np.ndarray] | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames = {k: [v[-1]] for k, v in obs.items()}
        self._steps: dict[str, list] = {
            keys.ACTION: [],
            keys.REWARD: [],
            keys.IS_SUCCESS: [],
            keys.TERMINATED: [],
        }
        return obs, info

    def step(self, chunk):
        total, discount, success, steps = 0.0, 1.0, False, 0
        obs, terminated, truncated, info = None, False, False, {}
        for action in np.asarray(chunk, dtype=np.float32):
            obs, reward, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            self._steps[keys.ACTION].append(np.clip(action, -1.0, 1.0))
            self._steps[keys.REWARD].append(np.float32(reward))
            self._steps[keys.IS_SUCCESS].append(bool(info.get(keys.IS_SUCCESS, False)))
            self._steps[keys.TERMINATED].append(bool(terminated))
            if not done:
                for k, v in obs.items():
                    self._frames[k].append(v[-1])
            total += discount * float(reward)
            discount *= self.gamma
            steps += 1
            success = success or bool(info.get(keys.IS_SUCCESS, False))
            if done:
                break
        info = dict(info)
        info[keys.CHUNK_STEPS] = steps
        info[keys.IS_SUCCESS] = success
        if terminated or truncated:  # kept past the autoreset that follows at once
            self.last_episode = self._episode()
        return obs, total, terminated, truncated, info

    def _episode(self) -> dict[str, np.ndarray]:
        episode = {k: np.stack(v) for k, v in self._frames.items()}
        episode[keys.ACTION] = np.stack(self._steps[keys.ACTION]).astype(np.float32)
        episode[keys.REWARD] = np.asarray(self._steps[keys.REWARD], dtype=np.float32)
        episode[keys.IS_SUCCESS] = np.asarray(self._steps[keys.IS_SUCCESS], dtype=bool)
        episode[keys.TERMINATED] = np.asarray(self._steps[keys.TERMINATED], dtype=bool)
        return episode


def collect_policy_episodes(
    policy: ChunkPolicy,
    task: TaskConfig,
    store: str | Path | EpisodeStore,
    episodes: int,
    n_envs: int = 16,
    seed: int = 50_000,
    progress: bool = True,
    **env_overrides,
) -> dict:
    """Run ``policy`` for ``episodes`` episodes on ``task`` and append them to ``store``
    (a path opened for appending, or an open store). Returns the number of episodes, env
    steps taken (those of episodes cut off when the quota was reached included) and the
    success rate of what was added."""
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes}, {n_envs}")
    own = not isinstance(store, EpisodeStore)
    handle = EpisodeStore.open(store, mode="a") if own else store
    if handle.meta.get("task") != task.name:
        raise ValueError(
            f"store {handle.path} holds task {handle.meta.get('task')!r}, not {task.name!r}; "
            "append rollouts of the task the store was recorded on"
        )
    n_envs = min(n_envs, episodes)

    def make():
        env = ObservationHistory(make_env(task, **env_overrides), policy.n_obs_steps)
        return _Recorder(env, policy.n_action_steps, 1.0)

    env = make_vector_env([make] * n_envs)
    added, successes, env_steps = 0, [], 0
    bar = tqdm(total=episodes, desc=f"rollouts {task.name}", disable=not progress, leave=False)
    try:
        obs, _ = env.reset(seed=seed)
        policy.reset()
        while added < episodes:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            env_steps += int(step_info(info, keys.CHUNK_STEPS).sum())
            for i in np.flatnonzero(terminated | truncated):
                if added >= episodes:
                    break
                episode = env.envs[i].last_episode
                handle.append_episode(episode)
                successes.append(bool(episode[keys.IS_SUCCESS].any()))
                added += 1
                bar.update(1)
    finally:
        bar.close()
        env.close()
        if own:
            handle.close()
    return {
        "episodes": added,
        "env_steps": env_steps,
        "success_rate": float(np.mean(successes)),
    }
