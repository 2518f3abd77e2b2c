"""``robot-rl improve improver=chunked_offline``: a chunk critic from a store, policies extracted
from it, evaluated side by side with the base; optionally online fine-tuning after.

Writes to ``out/``: ``summary.json``, ``curve.png`` (best-of-N success vs critic updates, then
vs online env steps), ``success.png`` (base vs every extracted policy, 95% intervals),
``rollout.mp4``, TensorBoard scalars under ``tb/``, one policy folder per extraction
(``best_of_n/``, ``expo/``, ``q_weighted/``, ``online/``) and resumable checkpoints
(``critic_checkpoint/``, ``online_checkpoint/``; finished extractions are not redone).
"""

from __future__ import annotations

import json
from pathlib import Path

from robot_rl.config import ImproveJob
from robot_rl.eval.media import plot_curve, plot_success, record_video
from robot_rl.eval.rollout import evaluate
from robot_rl.jobs.improve import check_base_matches_task, training_env
from robot_rl.offline.config import ChunkedOfflineConfig, from_dict
from robot_rl.offline.online import train_online
from robot_rl.offline.pipeline import ChunkedOffline
from robot_rl.offline.policies import save_offline_policy
from robot_rl.policies import load_policy, save_policy


def offline_config(improver: dict) -> ChunkedOfflineConfig:
    return from_dict(ChunkedOfflineConfig, {k: v for k, v in improver.items() if k != "kind"})


def chunked_offline_job(job: ImproveJob) -> dict:
    cfg = offline_config(job.improver)
    task = job.task.build()
    base = load_policy(job.base)
    check_base_matches_task(base, task)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    run = ChunkedOffline(base, cfg, out=out, progress=job.progress)
    try:
        summary = _run(run, job, task, out)
    finally:
        run.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run(run: ChunkedOffline, job: ImproveJob, task, out: Path) -> dict:
    cfg = run.cfg
    final_seed = cfg.eval_seed + 1
    summary: dict = {"task": task.name, "improver": "chunked_offline", "stores": cfg.store}
    summary["transitions"] = len(run.data)
    summary.update(run.train_critic(task, resume=job.resume))
    base_eval = _eval(run.base, task, job.final_eval_episodes, final_seed)
    results = {"base": base_eval}
    policies = {}
    for name in cfg.extract:
        folder = out / name
        if not (job.resume and folder.is_dir()):
            policy = _extract(run, name)
            if name == "q_weighted":
                save_policy(policy, folder, overwrite=True)
            else:
                save_offline_policy(policy, folder, job.base)
        policies[name] = load_policy(folder)
        results[name] = _eval(policies[name], task, job.final_eval_episodes, final_seed)
    online_curve = None
    if cfg.online.env_steps > 0:
        if cfg.online_policy == "expo":
            policy, expo = run.train_expo()
            critic = expo.critic
        else:
            policy, expo, critic = run.best_of_n(), None, run.critic
        history = train_online(
            critic,
            policy,
            run.batches,
            task,
            cfg.online,
            cfg.critic.samples,
            reward=cfg.reward,
            expo=expo,
            train_env=training_env(job, task, policy, cfg.critic.gamma),
            eval_episodes=cfg.eval_episodes,
            eval_seed=cfg.eval_seed,
            seed=cfg.seed,
            out=out,
            resume=job.resume,
            progress=job.progress,
            writer=run.writer,
        )
        save_offline_policy(policy, out / "online", job.base)
        results["online"] = _eval(policy, task, job.final_eval_episodes, final_seed)
        online_curve = history.__dict__
        policies["online"] = policy
    summary["results"] = results
    best = max(
        (n for n in results if n in cfg.extract), key=lambda n: results[n]["success"], default=None
    )
    summary["best_offline"] = best
    summary["offline_curve"] = run.curve
    summary["online_curve"] = online_curve
    summary.update(_pictures(run, results, online_curve, out, task.name))
    if job.video_episodes > 0 and policies:
        shown = policies.get("online") or policies[best]
        summary["video"] = str(
            record_video(shown, task, out / "rollout.mp4", job.video_episodes, final_seed)
        )
    return summary


def _extract(run: ChunkedOffline, name: str):
    if name == "best_of_n":
        return run.best_of_n()
    if name == "expo":
        return run.train_expo()[0]
    return run.train_q_weighted()[0]


def _eval(policy, task, episodes: int, seed: int) -> dict:
    result = evaluate(policy, task, episodes, 16, seed, progress=False)
    return {
        "success": result.success_rate,
        "ci95": list(result.success_ci95),
        "return": result.mean_return,
    }


def _pictures(run, results: dict, online_curve: dict | None, out: Path, task: str) -> dict:
    bars = {name: (r["success"], *r["ci95"]) for name, r in results.items()}
    files = {"plot": str(plot_success(bars, out / "success.png", f"chunked offline RL on {task}"))}
    x, y = list(run.curve["updates"]), list(run.curve["success"])
    label = "critic updates"
    if online_curve and online_curve["env_steps"]:
        # one axis: offline updates, then online env steps after the last update
        last = x[-1] if x else 0
        x += [last + s for s in online_curve["env_steps"]]
        y += online_curve["success"]
        label = "critic updates, then + online env steps"
    if x:
        base = [results["base"]["success"]] * len(x)
        files["curve"] = str(
            plot_curve(
                x,
                {"best-of-N": y, "base": base},
                out / "curve.png",
                label,
                "success rate",
                "chunked offline RL",
            )
        )
    return files
