"""The main job (``make demo``): imperfect demos -> diffusion policy -> evaluation -> report.

Later improvers (DSRL, offline RL) extend this same job with their stages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from robot_rl.config import CollectJob, DemoJob, EvalJob, ImproveJob, PretrainJob
from robot_rl.jobs.collect import collect
from robot_rl.jobs.evaluate import eval_job
from robot_rl.jobs.improve import improve_job
from robot_rl.jobs.pretrain import pretrain_job


def demo(job: DemoJob) -> dict:
    start = time.perf_counter()
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    store = str(out / "demos.zarr")
    policy_dir = str(out / "policy")

    stages = 4 if job.improver else 3
    _say(
        f"1/{stages} collecting {job.collect.get('episodes', 100)} imperfect expert demos on "
        f"'{job.task.name}' -> {store}"
    )
    collected = collect(CollectJob(task=job.task, store=store, overwrite=True, **job.collect))
    _say(f"    expert success in the demos: {collected['expert_success']:.0%}")

    _say(
        f"2/{stages} pretraining the {job.policy.get('kind')} policy by behaviour cloning "
        f"-> {policy_dir}"
    )
    trained = pretrain_job(
        PretrainJob(task=job.task, policy=job.policy, store=store, out=policy_dir, **job.pretrain),
        plot_path=out / "pretrain_loss.png",
    )

    _say(f"3/{stages} evaluating on {job.eval.get('episodes', 100)} episodes -> {out}")
    evaluated = eval_job(EvalJob(task=job.task, policy_path=policy_dir, out=str(out), **job.eval))

    improved = None
    if job.improver:
        _say(
            f"4/4 improving with {job.improver.get('kind')}-{job.improver.get('variant', '')} for "
            f"{job.improver.get('env_steps')} env steps -> {out / 'improve'}"
        )
        improved = improve_job(
            ImproveJob(
                task=job.task,
                improver=job.improver,
                base=policy_dir,
                out=str(out / "improve"),
                resume=False,
                final_eval_episodes=job.eval.get("episodes", 100),
                video_episodes=job.eval.get("video_episodes", 2),
            )
        )
    report = {
        "task": job.task.name,
        "demos": collected,
        "pretrain": trained,
        "eval": evaluated,
        "improve": improved,
        "demo_wall_s": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    lo, hi = evaluated["success_ci95"]
    _say("")
    _say(f"  {'policy':<22}{'success':>9}{'95% CI':>16}{'return':>9}{'length':>8}")
    _say(f"  {'expert demos':<22}{collected['expert_success']:>9.0%}{'':>16}")
    _say(
        f"  {'diffusion (BC)':<22}{evaluated['success_rate']:>9.0%}{f'[{lo:.0%}, {hi:.0%}]':>16}"
        f"{evaluated['mean_return']:>9.2f}{evaluated['mean_length']:>8.1f}"
    )
    if improved:
        lo, hi = improved["final_success_ci95"]
        label = improved["improver"] + " (RL)"
        _say(
            f"  {label:<22}{improved['final_success']:>9.0%}{f'[{lo:.0%}, {hi:.0%}]':>16}"
            f"   after {improved['env_steps']} env steps"
        )
    _say(
        f"\nreport: {out.resolve()} (metrics.json, success.png, pretrain_loss.png, rollout.mp4"
        f"{', improve/curve.png, improve/success.png, improve/rollout.mp4' if improved else ''}) "
        f"in {report['demo_wall_s']:.0f} s"
    )
    return report


def _say(line: str) -> None:
    print(line, flush=True)
