"""``robot-rl eval``: load a checkpoint, evaluate it, write eval.json, a PNG and an mp4."""

from __future__ import annotations

import json
from pathlib import Path

from robot_rl.config import EvalJob
from robot_rl.eval.media import plot_success, record_video
from robot_rl.eval.rollout import evaluate
from robot_rl.policies.checkpoint import load_policy


def eval_job(job: EvalJob) -> dict:
    task = job.task.build()
    policy = load_policy(job.policy_path)
    result = evaluate(policy, task, job.episodes, job.n_envs, job.seed, progress=job.progress)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"task": task.name, "policy": job.policy_path, **result.summary()}
    rate, (lo, hi) = result.success_rate, result.success_ci95
    summary["plot"] = str(plot_success({"policy": (rate, lo, hi)}, out / "success.png", task.name))
    if job.video_episodes > 0:
        summary["video"] = str(
            record_video(policy, task, out / "rollout.mp4", job.video_episodes, job.seed)
        )
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary
