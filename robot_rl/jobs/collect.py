"""``robot-rl collect``: run a task's scripted expert and append its episodes to a store; with
``policy_path=...`` also append rollouts of a pretrained policy (successes and failures, with
rewards), so offline RL has mixed-quality data to learn from beyond imitation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from robot_rl.config import CollectJob
from robot_rl.core import keys
from robot_rl.core.envs import ObservationHistory
from robot_rl.core.policy import ChunkPolicy
from robot_rl.core.task import ExpertQuality, TaskConfig, make_env, make_expert
from robot_rl.data import EpisodeStore


def collect(job: CollectJob, progress: bool = True) -> dict:
    """Collects ``job.episodes`` expert episodes, then ``job.policy_episodes`` rollouts of
    ``job.policy_path``, into ``job.store``; returns a summary."""
    overrides = {"cameras": tuple(job.cameras)} if job.cameras else {}
    task = job.task.build(**overrides)
    policy = _load_rollout_policy(job, task) if job.policy_episodes else None
    store = open_or_create_store(Path(job.store), task, fps=_fps(task), overwrite=job.overwrite)
    successes: list[bool] = []
    rollout_successes: list[bool] = []
    try:
        if job.episodes:
            env = make_env(task)
            expert = make_expert(
                task, env, ExpertQuality(job.noise_std, job.suboptimal_prob), seed=job.seed
            )
            try:
                bar = tqdm(range(job.episodes), desc=f"collect {task.name}", disable=not progress)
                for i in bar:
                    episode, success = run_expert_episode(env, expert, seed=job.seed + i)
                    store.append_episode(episode, success=success)
                    successes.append(success)
                    bar.set_postfix(success=f"{np.mean(successes):.2f}")
            finally:
                env.close()
        if policy is not None:
            rollouts = run_policy_episodes(
                task,
                policy,
                job.policy_episodes,
                n_envs=job.policy_n_envs,
                seed=job.policy_seed,
                progress=progress,
            )
            for episode, success in rollouts:
                store.append_episode(episode, success=success)
                rollout_successes.append(success)
        totals = {"n_episodes": store.n_episodes, "n_frames": store.n_frames}
    finally:
        store.close()
    summary = {"store": str(job.store), "episodes_added": len(successes) + len(rollout_successes)}
    if successes:
        summary["expert_success"] = float(np.mean(successes))
    if rollout_successes:
        summary["policy_episodes_added"] = len(rollout_successes)
        summary["policy_success"] = float(np.mean(rollout_successes))
    return {**summary, **totals}


def _load_rollout_policy(job: CollectJob, task: TaskConfig) -> ChunkPolicy:
    from robot_rl.policies.checkpoint import load_policy

    if not job.policy_path:
        raise ValueError(
            f"collect.policy_episodes={job.policy_episodes} needs policy_path=<checkpoint folder> "
            "of the policy whose rollouts to record"
        )
    policy = load_policy(job.policy_path)
    env = make_env(task)
    try:
        act_dim = int(np.prod(env.action_space.shape))
    finally:
        env.close()
    if policy.action_dim != act_dim:
        raise ValueError(
            f"policy {job.policy_path} writes {policy.action_dim}-d actions, task "
            f"{task.name!r} takes {act_dim}-d: was it trained on another task?"
        )
    return policy


def run_policy_episodes(
    task: TaskConfig,
    policy: ChunkPolicy,
    episodes: int,
    n_envs: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[tuple[dict[str, np.ndarray], bool]]:
    """Yields ``episodes`` rollouts of ``policy`` as store episodes (per step: the observation,
    the action taken, the reward after it, ``is_success``, ``terminated``) and their success.

    ``n_envs`` environments run in lock-step so the policy sees batches; each executes
    ``policy.n_action_steps`` actions of a chunk, then asks again (early stop at the end of its
    episode, as ``ChunkedEnv`` does). Episode ``i`` is reset with seed ``seed + i``."""
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes}, {n_envs}")
    envs = [ObservationHistory(make_env(task), policy.n_obs_steps) for _ in range(n_envs)]
    started = 0
    history: list = [None] * n_envs
    buffers: list = [None] * n_envs
    queues: list[list[np.ndarray]] = [[] for _ in range(n_envs)]
    done_count, wins = 0, 0
    bar = tqdm(total=episodes, desc=f"rollouts {task.name}", disable=not progress)

    def start(i: int) -> None:
        nonlocal started
        history[i], _ = envs[i].reset(seed=seed + started)
        buffers[i] = {"obs": [], "action": [], "reward": [], "success": [], "terminated": []}
        queues[i] = []
        started += 1

    try:
        policy.reset()
        for i in range(min(n_envs, episodes)):
            start(i)
        active = list(range(min(n_envs, episodes)))
        while active:
            need = [i for i in active if not queues[i]]
            if need:
                obs = {k: np.stack([history[i][k] for i in need]) for k in history[need[0]]}
                chunks = policy.act(obs)
                for i, chunk in zip(need, chunks, strict=True):
                    queues[i] = list(chunk)
            for i in list(active):
                action = queues[i].pop(0)
                buf = buffers[i]
                buf["obs"].append({k: v[-1] for k, v in history[i].items()})
                history[i], reward, terminated, truncated, info = envs[i].step(action)
                buf["action"].append(np.asarray(action, np.float32))
                buf["reward"].append(float(reward))
                buf["success"].append(bool(info.get(keys.IS_SUCCESS, False)))
                buf["terminated"].append(bool(terminated))
                if terminated or truncated:
                    episode, success = _episode_from(buf)
                    done_count += 1
                    wins += success
                    bar.update(1)
                    bar.set_postfix(success=f"{wins / done_count:.2f}")
                    yield episode, success
                    if started < episodes:
                        start(i)
                    else:
                        active.remove(i)
    finally:
        bar.close()
        for env in envs:
            env.close()


def _episode_from(buf: dict) -> tuple[dict[str, np.ndarray], bool]:
    episode = {k: np.stack([o[k] for o in buf["obs"]]) for k in buf["obs"][0]}
    episode[keys.ACTION] = np.stack(buf["action"]).astype(np.float32)
    episode[keys.REWARD] = np.asarray(buf["reward"], dtype=np.float32)
    episode[keys.IS_SUCCESS] = np.asarray(buf["success"], dtype=bool)
    episode[keys.TERMINATED] = np.asarray(buf["terminated"], dtype=bool)
    return episode, bool(episode[keys.IS_SUCCESS].any())


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
