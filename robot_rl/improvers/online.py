"""The online training loop of latent-noise steering: collect chunk transitions from vectorised
environments, update the learner, evaluate on a schedule, checkpoint, resume.

Timeline of one vector step (n_envs environments in lock-step)::

    obs s_t --noise w_t--> base denoises --chunk a_t:t+Ta--> env (early stop at termination)
         <-- r = sum_i gamma^i r_t+i, s_t+k, discount = gamma^k * (1 - terminated)
    discount = 0 also at the time limit unless ``bootstrap_timeouts`` (the learner's choice)

Then ``utd_ratio * n_envs`` gradient updates, so the update-to-data ratio counts transitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import gymnasium as gym
from tqdm.auto import tqdm

from robot_rl.core.envs import ProgressReward, make_vector_env
from robot_rl.core.task import TaskConfig
from robot_rl.eval.media import plot_curve
from robot_rl.eval.rollout import evaluate, make_policy_env
from robot_rl.improvers.collectors import VectorCollector
from robot_rl.improvers.dsrl import DSRL
from robot_rl.rl.replay import ReplayBuffer, learner_discount
from robot_rl.rl.state import (
    learner_tensors,
    load_learner,
    load_training_state,
    save_training_state,
)


@dataclass
class History:
    """Evaluations over training: env steps, success rate and its interval, wall time."""

    env_steps: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    ci95: list[list[float]] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    base_success: float | None = None
    base_ci95: list[float] | None = None
    updates: int = 0
    update_wall_s: float = 0.0

    def record(self, env_steps: int, result, wall_s: float) -> None:
        """Appends one evaluation (an :class:`~robot_rl.eval.rollout.EvalResult`)."""
        self.env_steps.append(env_steps)
        self.success.append(result.success_rate)
        self.ci95.append(list(result.success_ci95))
        self.wall_s.append(wall_s)

    def steps_to(self, threshold: float) -> int | None:
        """First evaluated env-step count at which success >= threshold."""
        return next(
            (s for s, r in zip(self.env_steps, self.success, strict=False) if r >= threshold), None
        )


def training_task(task: TaskConfig, cfg) -> tuple[TaskConfig, Callable[[gym.Env], gym.Env] | None]:
    """The task as the learner sees it for ``cfg.reward_type``, and the per-step reward wrapper
    (:class:`ProgressReward`) to put around each training environment, if any."""
    if cfg.reward_type is None:
        return task, None
    reward = ProgressReward if cfg.reward_type == "progress" else None
    env_reward = "dense" if reward else cfg.reward_type  # progress is made of the shaped one
    return replace(task, env_kwargs={**task.env_kwargs, "reward_type": env_reward}), reward


def task_vector_env(
    task: TaskConfig, learner: DSRL, n_envs: int, asynchronous: bool = False
) -> gym.vector.VectorEnv:
    """``n_envs`` training environments of ``task`` stepping the steered policy's chunks."""
    task, reward = training_task(task, learner.cfg)
    make = partial(make_policy_env, task, learner.policy, learner.cfg.gamma, reward)
    return make_vector_env([make] * n_envs, asynchronous=asynchronous)


def train_dsrl(
    learner: DSRL,
    task: TaskConfig,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    base_success: float | None = None,
    train_env: Callable[[int], gym.vector.VectorEnv] | None = None,
    collector=None,
) -> History:
    """Runs ``learner.cfg.env_steps`` env steps of DSRL on ``task``; returns the history.

    Training transitions come from ``train_env(n_envs)`` when given (a world model's
    imagination, an environment whose reward a reward model replaced): a vector environment
    that steps whole chunks like :func:`make_policy_env` does (stacked observations,
    ``info[keys.CHUNK_STEPS]``, the final observation on autoreset). ``collector`` replaces the
    in-process environments altogether (e.g. :class:`robot_rl.distributed.RayCollector`:
    remote rollout workers); it gets the learner to act with and returns
    :class:`~robot_rl.improvers.collectors.Transitions`. Evaluations always run on ``task``
    itself, so success is the task's.

    Each batch of ``n`` transitions is followed by ``utd_ratio * n`` gradient updates, whoever
    collected it. With ``out``: TensorBoard scalars in ``out/tb``, a learning curve
    ``out/curve.png``, the steered policy's evaluation history ``out/history.json`` and a
    resumable checkpoint ``out/checkpoint`` written after every evaluation (the last good one
    survives a crash)."""
    cfg = learner.cfg
    if train_env is not None and collector is not None:
        raise ValueError("give train_env or collector, not both")
    eval_task, _ = training_task(task, cfg)
    out = Path(out) if out else None
    writer = _writer(out)
    replay = ReplayBuffer(  # kept on the CPU; sampled batches go to the learner's device
        learner.obs_dim, learner.noise_dim + learner.chunk_dim, cfg.replay_capacity, cfg.sac.device
    )
    history, env_steps = History(base_success=base_success), 0
    if out and resume and (out / "checkpoint").exists():
        history, env_steps = _load(learner, replay, out / "checkpoint")
    if history.base_success is None:
        base_eval = _evaluate(learner.base, eval_task, cfg)
        history.base_success = base_eval.success_rate
        history.base_ci95 = list(base_eval.success_ci95)
    if collector is None:
        if train_env is None:
            env = task_vector_env(task, learner, cfg.n_envs, cfg.async_envs)
        else:
            env = train_env(cfg.n_envs)
            if env.num_envs != cfg.n_envs:
                env.close()
                raise ValueError(
                    f"train_env({cfg.n_envs}) returned {env.num_envs} environments; "
                    "it must build exactly the number it is asked for"
                )
        collector = VectorCollector(env, seed=cfg.seed + env_steps)
    next_eval = (env_steps // cfg.eval_every + 1) * cfg.eval_every
    bar = tqdm(
        total=cfg.env_steps,
        initial=env_steps,
        desc=f"dsrl-{cfg.variant} {task.name}",
        disable=not progress,
        unit="step",
    )
    start = time.perf_counter() - (history.wall_s[-1] if history.wall_s else 0.0)
    try:
        while env_steps < cfg.env_steps:
            batch = collector.collect(
                learner, warmup=env_steps < cfg.warmup_env_steps, gamma=cfg.gamma
            )
            replay.add(
                batch.state,
                batch.action,
                batch.reward,
                batch.next_state,
                learner_discount(batch.discount, batch.timeout, cfg.bootstrap_timeouts),
            )
            env_steps += batch.env_steps
            bar.update(batch.env_steps)
            if env_steps >= cfg.warmup_env_steps and len(replay) >= cfg.sac.batch_size:
                if history.updates == 0:
                    learner.fit_obs_normalization(replay.obs[: len(replay)])
                t0 = time.perf_counter()
                for _ in range(cfg.sac.utd_ratio * len(batch)):
                    metrics = learner.update(replay.sample(cfg.sac.batch_size, learner.generator))
                history.update_wall_s += time.perf_counter() - t0
                history.updates += cfg.sac.utd_ratio * len(batch)
                if writer:
                    for k, v in metrics.items():
                        writer.add_scalar(f"train/{k}", v, env_steps)
            if env_steps >= next_eval or env_steps >= cfg.env_steps:
                result = _evaluate(learner.policy, eval_task, cfg)
                _record(history, env_steps, result, time.perf_counter() - start, writer)
                bar.set_postfix(success=f"{result.success_rate:.2f}")
                next_eval += cfg.eval_every
                if out:
                    _save(learner, replay, history, env_steps, out)
    finally:
        bar.close()
        collector.close()
        if writer:
            writer.close()
    return history


def _evaluate(policy, task: TaskConfig, cfg):
    return evaluate(
        policy, task, cfg.eval_episodes, min(16, cfg.eval_episodes), cfg.eval_seed, progress=False
    )


def _record(history: History, env_steps: int, result, wall_s: float, writer) -> None:
    history.record(env_steps, result, wall_s)
    if writer:
        writer.add_scalar("eval/success_rate", result.success_rate, env_steps)
        writer.add_scalar("eval/mean_return", result.mean_return, env_steps)


def _writer(out: Path | None):
    if out is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _save(learner: DSRL, replay: ReplayBuffer, history: History, env_steps: int, out: Path) -> None:
    tensors, opt_meta = learner_tensors(learner.modules(), learner.optimizers())
    meta = {
        "env_steps": env_steps,
        "history": history.__dict__,
        "optimizers": opt_meta,
        "updates": learner.sac.updates,
    }
    tensors.update({f"replay/{k}": v for k, v in replay.state_dict().items()})
    save_training_state(out / "checkpoint", tensors, meta)
    (out / "history.json").write_text(json.dumps(history.__dict__, indent=2))
    curves = {"steered (DSRL)": history.success}
    if history.base_success is not None:
        curves["base"] = [history.base_success] * len(history.success)
    plot_curve(
        history.env_steps,
        curves,
        out / "curve.png",
        "env steps",
        "success rate",
        f"DSRL-{learner.cfg.variant}",
    )


def _load(learner: DSRL, replay: ReplayBuffer, folder: Path) -> tuple[History, int]:
    tensors, meta = load_training_state(folder)
    load_learner(tensors, meta["optimizers"], learner.modules(), learner.optimizers())
    replay.load_state_dict(
        {k[len("replay/") :]: v for k, v in tensors.items() if k.startswith("replay/")}
    )
    learner.sac.updates = meta["updates"]
    return History(**meta["history"]), int(meta["env_steps"])
