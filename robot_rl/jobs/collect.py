"""``robot-rl collect``: run a task's scripted expert and append its episodes to a store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from robot_rl.config import CollectJob
from robot_rl.core import keys
from robot_rl.core.task import ExpertQuality, TaskConfig, make_env, make_expert
from robot_rl.data import EpisodeStore


def collect(job: CollectJob, progress: bool = True) -> dict:
    """Collects ``job.episodes`` expert episodes into ``job.store``; returns a summary."""
    overrides = {"cameras": tuple(job.cameras)} if job.cameras else {}
    task = job.task.build(**overrides)
    store = open_or_create_store(Path(job.store), task, fps=_fps(task), overwrite=job.overwrite)
    env = make_env(task)
    expert = make_expert(
        task, env, ExpertQuality(job.noise_std, job.suboptimal_prob), seed=job.seed
    )
    successes = []
    try:
        bar = tqdm(range(job.episodes), desc=f"collect {task.name}", disable=not progress)
        for i in bar:
            episode, success = run_expert_episode(env, expert, seed=job.seed + i)
            store.append_episode(episode, success=success)
            successes.append(success)
            bar.set_postfix(success=f"{np.mean(successes):.2f}")
        totals = {"n_episodes": store.n_episodes, "n_frames": store.n_frames}
    finally:
        env.close()
        store.close()
    return {
        "store": str(job.store),
        "episodes_added": len(successes),
        "expert_success": float(np.mean(successes)),
        **totals,
    }


def run_expert_episode(env, expert, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """One episode: observation t is paired with the action taken at t and the reward after."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    frames: dict[str, list] = {k: [] for k in obs}
    actions, rewards, successes, terminals = [], [], [], []
    done = False
    while not done:
        action = expert.act(obs)
        for k, v in obs.items():
            frames[k].append(v)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info.get(keys.IS_SUCCESS, False)))
        terminals.append(bool(terminated))
        done = terminated or truncated
    episode = {k: np.stack(v) for k, v in frames.items()}
    episode[keys.ACTION] = np.asarray(actions, dtype=np.float32)
    episode[keys.REWARD] = np.asarray(rewards, dtype=np.float32)
    episode[keys.IS_SUCCESS] = np.asarray(successes, dtype=bool)
    episode[keys.TERMINATED] = np.asarray(terminals, dtype=bool)
    return episode, bool(any(successes))


def open_or_create_store(
    path: Path,
    task: TaskConfig,
    fps: float,
    overwrite: bool = False,
    source: str = "scripted_expert",
) -> EpisodeStore:
    if overwrite and path.exists():
        shutil.rmtree(path)
    if path.exists():
        store = EpisodeStore.open(path, mode="a")
        if store.meta.get("task") != task.name:
            raise ValueError(
                f"store {path} holds task {store.meta.get('task')!r}, not {task.name!r}; "
                "choose another store path or pass overwrite=true"
            )
        return store
    path.parent.mkdir(parents=True, exist_ok=True)
    return EpisodeStore.create(path, task=task.name, fps=fps, source=source, robot=task.robot)


def _fps(task: TaskConfig) -> float:
    env = make_env(task)
    try:
        return float(env.metadata.get("render_fps", 10))
    finally:
        env.close()
