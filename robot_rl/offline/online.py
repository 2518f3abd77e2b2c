"""Offline -> online: keep training the chunk critic (and the edit policy) on rollouts of the
extracted policy in an environment.

Timeline of one vector step (E environments)::

    obs s --base: N chunks (one call)--> Q scores --argmax (or, with prob. epsilon, a random
        base sample)--> chunk --env: h steps, early stop--> R, s', discount
    transition (s, chunk, R, discount, s') + K base samples at s (from the N) and at s'
    -> utd_ratio * E critic updates on batches of
         mode="retain": half stored data, half online data (RLPD's symmetric sampling)
         mode="wsrl":   online data only, after warmup_env_steps of offline-policy rollouts
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.envs import (
    final_observation,
    make_vector_env,
    step_info,
    time_limit_timeouts,
)
from robot_rl.core.task import TaskConfig
from robot_rl.eval.rollout import evaluate, make_policy_env
from robot_rl.improvers.online import History
from robot_rl.improvers.steered import flat_state
from robot_rl.offline.config import OnlineConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.data import sample_candidates
from robot_rl.offline.expo import ExpoLearner
from robot_rl.offline.policies import BestOfNPolicy
from robot_rl.offline.replay import OfflineBatches, OnlineBatches, concat_batches
from robot_rl.rl.replay import learner_discount
from robot_rl.rl.state import (
    learner_tensors,
    load_learner,
    load_training_state,
    save_training_state,
)


def online_task(task: TaskConfig, reward: str | None) -> TaskConfig:
    """The task with the reward the critic was trained on ('sparse' or 'dense'; None keeps
    the task's own setting)."""
    if reward in ("sparse", "dense"):
        return replace(task, env_kwargs={**task.env_kwargs, "reward_type": reward})
    return task


def train_online(
    critic: ChunkCritic,
    policy: BestOfNPolicy,
    offline: OfflineBatches,
    task: TaskConfig,
    cfg: OnlineConfig,
    samples: int,
    *,
    reward: str | None = "sparse",
    expo: ExpoLearner | None = None,
    train_env: Callable[[int], gym.vector.VectorEnv] | None = None,
    eval_episodes: int = 50,
    eval_seed: int = 10_000,
    seed: int = 0,
    out: Path | None = None,
    resume: bool = True,
    progress: bool = True,
    writer=None,
) -> History:
    """Runs ``cfg.env_steps`` online env steps; evaluations on ``task`` every
    ``cfg.eval_every`` steps and at the end.

    ``train_env(n)`` replaces the task's own training environments (another reward,
    imagination, a robot) and must step whole chunks like :func:`make_policy_env`; by default
    they are the task's with ``reward`` ('sparse' or 'dense', as the critic learnt; None keeps
    the task's own; a reward model needs ``train_env``). With ``out``, a checkpoint is written
    after every evaluation and picked up again when ``resume``."""
    replay = OnlineBatches(critic.obs_dim, critic.chunk_dim, samples, cfg.replay_capacity)
    history, env_steps = History(), 0
    ckpt = out / "online_checkpoint" if out else None
    if ckpt and resume and ckpt.exists():
        history, env_steps = _load(critic, expo, replay, ckpt)
    if train_env is None:
        train_task = online_task(task, reward)
        env = make_vector_env(
            [lambda: make_policy_env(train_task, policy, gamma=critic.cfg.gamma)] * cfg.n_envs
        )
    else:
        env = train_env(cfg.n_envs)
    rng = np.random.default_rng(seed + env_steps)
    obs, _ = env.reset(seed=seed + 50_000 + env_steps)
    next_eval = (env_steps // cfg.eval_every + 1) * cfg.eval_every
    bar = tqdm(total=cfg.env_steps, initial=env_steps, desc="online", disable=not progress)
    start = time.perf_counter() - (history.wall_s[-1] if history.wall_s else 0.0)
    try:
        while env_steps < cfg.env_steps:
            chunk, base_samples = _act(policy, obs, cfg.epsilon, rng)
            state = flat_state(obs)
            obs, reward, terminated, truncated, info = env.step(chunk[:, : policy.n_action_steps])
            steps = step_info(info, keys.CHUNK_STEPS).astype(np.int64)
            next_state = flat_state(final_observation(info, obs))
            next_t = torch.from_numpy(next_state)
            replay.add(
                obs=torch.from_numpy(state),
                action=torch.from_numpy(chunk[:, : policy.n_action_steps].reshape(len(chunk), -1)),
                reward=torch.as_tensor(reward, dtype=torch.float32),
                discount=torch.as_tensor(
                    learner_discount(
                        critic.cfg.gamma**steps * (1.0 - terminated),
                        time_limit_timeouts(env, terminated, truncated),
                        critic.cfg.bootstrap_timeouts,
                    ),
                    dtype=torch.float32,
                ),
                next_obs=next_t,
                candidates=base_samples[:, :samples],
                next_candidates=sample_candidates(
                    policy.base, next_t, samples, int(rng.integers(2**31)), progress=False
                ),
            )
            env_steps += int(steps.sum())
            bar.update(int(steps.sum()))
            learning = cfg.mode == "retain" or env_steps >= cfg.warmup_env_steps
            if learning and cfg.utd_ratio > 0:
                metrics = _updates(critic, expo, offline, replay, cfg, len(chunk))
                history.updates += cfg.utd_ratio * len(chunk)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"online/{k}", v, env_steps)
            if env_steps >= next_eval or env_steps >= cfg.env_steps:
                result = evaluate(policy, task, eval_episodes, 16, eval_seed, progress=False)
                history.record(env_steps, result, time.perf_counter() - start)
                bar.set_postfix(success=f"{result.success_rate:.2f}")
                if writer is not None:
                    writer.add_scalar("online/success_rate", result.success_rate, env_steps)
                next_eval += cfg.eval_every
                if ckpt:
                    _save(critic, expo, replay, history, env_steps, ckpt)
    finally:
        bar.close()
        env.close()
    return history


def _act(
    policy: BestOfNPolicy, obs, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, torch.Tensor]:
    """The chosen chunks ``[E, H, A]`` and the executed parts of the N base samples
    ``[E, N, C]`` (cached for the conservative term)."""
    chunks, scores = policy.candidates(obs)
    choice = scores.argmax(axis=1)
    explore = rng.random(len(choice)) < epsilon
    choice[explore] = rng.integers(0, policy.n, size=int(explore.sum()))
    chosen = chunks[np.arange(len(chunks)), choice]
    base = chunks[:, : policy.n, : policy.n_action_steps]
    return chosen, torch.from_numpy(np.ascontiguousarray(base)).reshape(len(chunks), policy.n, -1)


def _updates(critic, expo, offline, replay, cfg: OnlineConfig, n_new: int) -> dict[str, float]:
    size = critic.cfg.batch_size
    metrics: dict[str, float] = {}
    for _ in range(cfg.utd_ratio * n_new):
        if cfg.mode == "retain":
            half = size // 2
            batch = concat_batches(
                offline.sample(size - half, critic.generator),
                replay.sample(half, critic.generator),
            )
        else:
            batch = replay.sample(size, critic.generator)
        metrics = expo.update(batch) if expo is not None else critic.update(batch)
    return metrics


def _modules(critic: ChunkCritic, expo: ExpoLearner | None):
    mods, opts = dict(critic.modules()), dict(critic.optimizers())
    if expo is not None:
        mods["edit"], opts["edit_opt"] = expo.edit, expo.opt
    return mods, opts


def _save(critic, expo, replay: OnlineBatches, history, env_steps: int, folder: Path) -> None:
    tensors, opt_meta = learner_tensors(*_modules(critic, expo))
    meta = {"env_steps": env_steps, "history": history.__dict__, "optimizers": opt_meta}
    meta["critic_updates"] = critic.updates
    tensors.update({f"replay/{k}": v for k, v in replay.state_dict().items()})
    save_training_state(folder, tensors, meta)


def _load(critic, expo, replay: OnlineBatches, folder: Path) -> tuple[History, int]:
    tensors, meta = load_training_state(folder)
    load_learner(tensors, meta["optimizers"], *_modules(critic, expo))
    replay.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("replay/")})
    critic.updates = int(meta["critic_updates"])
    return History(**meta["history"]), int(meta["env_steps"])
