"""``robot-rl improve improver=dsrl``: improve a pretrained policy, then evaluate it."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from robot_rl.config import ImproveJob
from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.core.task import TaskConfig, make_env
from robot_rl.eval.media import plot_success, record_video
from robot_rl.eval.rollout import evaluate
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import train_dsrl
from robot_rl.improvers.steered import save_steered
from robot_rl.policies.checkpoint import load_policy


def dsrl_config(improver: dict) -> DSRLConfig:
    known = {f.name for f in fields(DSRLConfig)}
    unknown = sorted(set(improver) - known - {"kind"})
    if unknown:
        raise ValueError(f"unknown DSRL settings {unknown}; known: {sorted(known)}")
    return DSRLConfig(**{k: v for k, v in improver.items() if k != "kind"})


def check_base_matches_task(base, task: TaskConfig) -> int:
    """The base must read the task's observations and write its actions; returns the noise
    actor's input size (state history). Raises naming both shapes otherwise."""
    if not isinstance(base, SteerableChunkPolicy):
        raise TypeError(
            f"{type(base).__name__} is not steerable: DSRL needs a diffusion or flow policy "
            "that denoises a given noise"
        )
    env = make_env(task)
    try:
        obs_space, act_dim = env.observation_space, int(np.prod(env.action_space.shape))
    finally:
        env.close()
    for key, shape in base.config.obs_shapes.items():
        if key not in obs_space.spaces or tuple(obs_space[key].shape) != tuple(shape):
            have = tuple(obs_space[key].shape) if key in obs_space.spaces else "missing"
            raise ValueError(
                f"base policy reads {key!r} of shape {tuple(shape)}, task {task.name!r} "
                f"gives {have}: was the base trained on another task?"
            )
    if base.action_dim != act_dim:
        raise ValueError(
            f"base policy writes {base.action_dim}-d actions, task {task.name!r} takes {act_dim}-d"
        )
    if "state" not in obs_space.spaces:
        raise ValueError(f"task {task.name!r} has no 'state' observation for the noise actor")
    return base.n_obs_steps * int(np.prod(obs_space["state"].shape))


def training_env(job: ImproveJob, task: TaskConfig, policy, gamma: float):
    """``job.env`` (e.g. ``env=imagination``: training transitions from a world model) as the
    ``train_env(n_envs)`` factory online improvers take; None trains on the task itself."""
    if job.env is None:
        return None
    from hydra.utils import instantiate

    return instantiate(
        job.env,
        task=task,
        policy=policy,
        world_model=job.world_model,
        gamma=gamma,
        _convert_="all",
    )


def improve_job(job: ImproveJob) -> dict:
    if job.improver.get("kind") == "chunked_offline":
        from robot_rl.jobs.offline import chunked_offline_job

        return chunked_offline_job(job)
    if job.improver.get("kind") != "dsrl":
        raise ValueError(
            f"unknown improver kind {job.improver.get('kind')!r}; "
            "available: ['dsrl', 'chunked_offline']"
        )
    cfg = dsrl_config(job.improver)
    task = job.task.build()
    base = load_policy(job.base)
    obs_dim = check_base_matches_task(base, task)
    out = Path(job.out)
    learner = DSRL(base, obs_dim, cfg)
    extra = {}
    if job.runner is not None:
        history, extra = _train_on_runner(job, task, cfg, obs_dim, learner)
    else:
        # the steered policy: its chunk length and history
        train_env = training_env(job, task, learner.policy, cfg.gamma)
        history = train_dsrl(
            learner, task, out=out, resume=job.resume, progress=job.progress, train_env=train_env
        )
    policy_dir = save_steered(learner.policy, out / "policy", job.base)
    final = evaluate(
        learner.policy, task, job.final_eval_episodes, 16, cfg.eval_seed + 1, progress=False
    )
    summary = {
        "task": task.name,
        "improver": f"dsrl-{cfg.variant}",
        "base_success": history.base_success,
        "final_success": final.success_rate,
        "final_success_ci95": list(final.success_ci95),
        "env_steps": history.env_steps[-1] if history.env_steps else 0,
        "env_steps_to_90": history.steps_to(0.9),
        "updates": history.updates,
        "updates_per_s": history.updates / max(history.update_wall_s, 1e-9),
        "wall_s": history.wall_s[-1] if history.wall_s else 0.0,
        "policy": str(policy_dir),
        "curve": str(out / "curve.png"),
        **extra,
    }
    bars = {"base": (history.base_success, *history.base_ci95)} if history.base_ci95 else {}
    bars[f"steered (DSRL-{cfg.variant})"] = (final.success_rate, *final.success_ci95)
    summary["plot"] = str(plot_success(bars, out / "success.png", task.name))
    if job.video_episodes > 0:
        summary["video"] = str(
            record_video(
                learner.policy, task, out / "rollout.mp4", job.video_episodes, cfg.eval_seed + 1
            )
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _train_on_runner(job: ImproveJob, task: TaskConfig, cfg: DSRLConfig, obs_dim: int, learner):
    """``runner=ray``: DSRL with Ray rollout workers and a Ray learner; ``learner`` takes the
    trained noise actor. Returns the history and the collection figures for the summary."""
    settings = {k: v for k, v in job.runner.items() if k != "kind"}
    if job.runner.get("kind") != "ray":
        raise ValueError(f"unknown runner kind {job.runner.get('kind')!r}; available: ['ray']")
    if job.env is not None:
        raise ValueError(
            "runner=ray collects on the task itself; env=... (imagination, reward models) runs "
            "with the default in-process runner"
        )
    try:
        from robot_rl.distributed import RayRunnerConfig, train_dsrl_ray
    except ImportError as err:
        raise ImportError(f"runner=ray needs Ray: pip install 'robot-rl[ray]' ({err})") from err
    known = {f.name for f in fields(RayRunnerConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown runner settings {unknown}; known: {sorted(known)}")
    if not job.resume:
        import shutil

        shutil.rmtree(Path(job.out) / "checkpoint", ignore_errors=True)
    run = train_dsrl_ray(
        job.base, task, cfg, obs_dim, RayRunnerConfig(**settings), job.out, job.progress
    )
    learner.load_acting_weights(run.weights)
    extra = {
        "runner": "ray",
        "collection": {k: v for k, v in run.collector.items() if k != "worker_timings"},
        "learner_crashes": run.learner_crashes,
    }
    return run.history, extra
