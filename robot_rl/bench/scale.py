"""Scale suite: where a DSRL run's time goes on one machine, how fast Ray rollout workers collect
beside the single-process collector at the same settings, how many transitions one learner can
take, and DSRL with 2 Ray workers beside the single-process run at the same env-step budget,
with a rollout worker killed mid-run.

Parts (``parts=[...]``):

* ``breakdown``: per env step of the single-process loop at the improver's settings, seconds in
  the environments (physics and the chunk wrapper), rendering (a camera image per step, for
  image-based rewards and policies), policy inference (the noise actor and the base's
  denoising, batched over the environments) and learner updates (``utd_ratio`` per chunk).
* ``collection``: env steps/s of collection alone (acting, no updates) for ``seconds`` each:
  the single-process collector (``n_envs`` environments, one batched policy call per step),
  one Ray worker and ``workers`` Ray workers with the same ``n_envs`` each.
* ``learner``: the learner's updates/s on a replay of real transitions and its ingest limit,
  transitions/s = updates/s / utd_ratio (env steps/s = that times the chunk length), and from
  it the number of workers one learner can feed.
* ``dsrl``: per seed, DSRL in one process and with ``workers`` Ray workers at the same budget;
  final success on ``eval_episodes`` episodes, env steps/s end to end; in the Ray run of the
  first seed a worker is killed (``kill -9``) at ``kill_at`` of the budget.
* ``learner_drill``: a short Ray run (3,000 env steps, checkpoints every 1,000) whose learner
  process is killed at 1,500: the driver restarts it and it resumes from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.bench.common import bench_options, merge_previous, pretrain_base
from robot_rl.core.task import make_env
from robot_rl.eval.rollout import evaluate
from robot_rl.eval.stats import mean_interval
from robot_rl.improvers.collectors import VectorCollector
from robot_rl.improvers.dsrl import DSRL
from robot_rl.improvers.online import task_vector_env, train_dsrl
from robot_rl.jobs.improve import check_base_matches_task, dsrl_config
from robot_rl.policies import load_policy
from robot_rl.rl.replay import ReplayBuffer

PARTS = ("breakdown", "collection", "learner", "dsrl", "learner_drill")


@dataclass
class ScaleBench:
    """Settings of the scale benchmark (``key=value`` on the command line)."""

    task: str = "push"
    """task config name"""
    base: str | None = None
    """checkpoint of the base policy; None pretrains one with the demo's settings"""
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    """parts to run: breakdown, collection, learner, dsrl"""
    workers: int = 2
    """Ray rollout workers"""
    improver: list[str] = field(default_factory=list)
    """overrides of configs/improver/dsrl.yaml (both runners)"""
    runner: list[str] = field(default_factory=list)
    """overrides of configs/runner/ray.yaml for the Ray runs (e.g. ``calls_in_flight=2``)"""
    seconds: float = 15.0
    """collection time per collector and round in the collection part"""
    rounds: int = 3
    """alternating rounds of the single-process collector and the Ray workers"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of the DSRL runs"""
    env_steps: int = 15_000
    """env-step budget of every DSRL run"""
    eval_every: int = 5_000
    """env steps between learning-curve evaluations"""
    eval_episodes: int = 100
    """episodes of the final evaluation of each run"""
    kill_at: float | None = 0.5
    """share of the budget at which a worker of the first seed's Ray run is killed; None: none"""
    out: str = "reports/bench-scale"
    """folder for the runs' checkpoints and curves"""
    previous: str | None = None
    """JSON of an earlier run of this suite: figures of parts not run now are taken from it
    (e.g. the DSRL runs from a long run, the timings from a run on a quiet machine)"""


def run(overrides: list[str]) -> dict:
    opts: ScaleBench = bench_options(ScaleBench, overrides, PARTS)
    torch.set_num_threads(1)
    task = config.load_job("improve", config.ImproveJob, [f"task={opts.task}"]).task.build()
    improver = config.load_job(
        "improve", config.ImproveJob, [f"improver.{o}" for o in opts.improver]
    ).improver
    cfg = dsrl_config(improver)
    runner = {
        k: v
        for k, v in config.load_job(
            "improve", config.ImproveJob, ["runner=ray"] + [f"runner.{o}" for o in opts.runner]
        ).runner.items()
        if k != "kind"
    }
    figures: dict = {
        "settings": OmegaConf.to_container(OmegaConf.structured(opts)),
        "runner": runner,
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_scale_") as tmp:
        if opts.base:
            base_path = opts.base
        else:
            base_path = pretrain_base(opts.task, Path(tmp))
        base = load_policy(base_path)
        obs_dim = check_base_matches_task(base, task)
        figures["base_checkpoint"] = str(base_path)
        if "breakdown" in opts.parts:
            figures["breakdown"] = _breakdown(task, base, obs_dim, cfg)
        if "collection" in opts.parts:
            figures.update(_collection(task, base_path, base, obs_dim, cfg, opts, runner))
        if "learner" in opts.parts:
            figures.update(_learner(task, base, obs_dim, cfg, figures))
        if "dsrl" in opts.parts:
            figures.update(_dsrl(task, base_path, base, obs_dim, cfg, opts, runner))
        if "learner_drill" in opts.parts:
            figures.update(_learner_drill(task, base_path, obs_dim, cfg, Path(opts.out)))
    if opts.previous:
        merge_previous(figures, opts.previous)
    return figures


def _breakdown(task, base, obs_dim: int, cfg, vector_steps: int = 30) -> dict:
    learner = DSRL(base, obs_dim, cfg)
    collector = VectorCollector(task_vector_env(task, learner, cfg.n_envs), cfg.seed)
    collector.collect(learner, warmup=True)  # first call: imports, caches
    collector.timings = {k: 0.0 for k in collector.timings}
    batches = [collector.collect(learner, warmup=False) for _ in range(vector_steps)]
    collector.close()
    env_steps = sum(b.env_steps for b in batches)
    transitions = sum(len(b) for b in batches)
    update_s = _seconds_per_update(learner, batches, updates=200)
    render_s = _render_s_per_step(task)
    per_step = {
        "env_ms": 1e3 * collector.timings["env_s"] / env_steps,
        "render_ms": 1e3 * render_s,
        "inference_ms": 1e3 * collector.timings["inference_s"] / env_steps,
        "updates_ms": 1e3 * update_s * cfg.sac.utd_ratio * transitions / env_steps,
    }
    total = sum(v for k, v in per_step.items() if k != "render_ms")
    return {
        "ms_per_env_step": per_step,
        "share_without_render": {k: v / total for k, v in per_step.items() if k != "render_ms"},
        "update_ms": 1e3 * update_s,
        "n_envs": cfg.n_envs,
        "chunk_steps": learner.n_action_steps,
        "utd_ratio": cfg.sac.utd_ratio,
        "note": "render_ms is what a camera image per step adds (image rewards or policies); "
        "the state task renders nothing",
    }


def _seconds_per_update(learner: DSRL, batches, updates: int, untimed: int = 0) -> float:
    """Seconds per learner update on a replay of ``batches`` (input statistics fitted from
    them, as before a run's first update), after ``untimed`` updates off the clock."""
    replay = ReplayBuffer(
        learner.obs_dim, learner.noise_dim + learner.chunk_dim, 10_000, learner.cfg.sac.device
    )
    for b in batches:
        replay.add(b.state, b.action, b.reward, b.next_state, b.discount)
    learner.fit_obs_normalization(replay.obs[: len(replay)])
    batch_size = learner.cfg.sac.batch_size
    for _ in range(untimed):
        learner.update(replay.sample(batch_size, learner.generator))
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(replay.sample(batch_size, learner.generator))
    return (time.perf_counter() - start) / updates


def _render_s_per_step(task, steps: int = 40) -> float:
    """Seconds a camera image adds to one env step: the same steps with and without it."""
    timings = []
    for cameras in ([], ["top"]):
        env = make_env(task, cameras=cameras)
        env.reset(seed=0)
        zero = np.zeros(env.action_space.shape, np.float32)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(zero)
        timings.append((time.perf_counter() - start) / steps)
        env.close()
    return max(timings[1] - timings[0], 0.0)


def _collection(task, base_path, base, obs_dim: int, cfg, opts: ScaleBench, runner: dict) -> dict:
    """Collection alone, acting with the initial noise actor: one Ray worker on its own, then
    rounds alternating the single-process collector and ``workers`` Ray workers, so the
    machine's load hits both alike (medians over rounds)."""
    import ray

    from robot_rl.distributed.ray_runner import RayCollector, RayRunnerConfig, init_ray
    from robot_rl.distributed.shipping import checkpoint_files

    learner = DSRL(base, obs_dim, cfg)
    files = checkpoint_files(base_path)

    def rate(collect, seconds: float) -> float:
        collect()  # a first call outside the clock
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            steps += collect()
        return steps / (time.perf_counter() - start)

    def ray_collector(workers: int) -> RayCollector:
        settings = RayRunnerConfig(**{**runner, "workers": workers})
        collector = RayCollector(task, files, cfg, obs_dim, settings)
        while collector.env_steps == 0 or min(len(t) for t in collector.timings) == 0:
            collector.collect(learner, warmup=False)  # start-up: every worker has answered
        return collector

    def ray_rate(collector: RayCollector, seconds: float) -> float:
        before = collector.env_steps
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            collector.collect(learner, warmup=False)
        steps_per_s = (collector.env_steps - before) / (time.perf_counter() - start)
        collector.drain()  # idle while the other collector is measured
        return steps_per_s

    started = init_ray(RayRunnerConfig(**{**runner, "workers": opts.workers, "learner_cpus": 0}))
    try:
        one = ray_collector(1)
        per_worker = ray_rate(one, opts.seconds)
        one.close()
        many = ray_collector(opts.workers)
        local = VectorCollector(task_vector_env(task, learner, cfg.n_envs), cfg.seed)
        single_rates, ray_rates = [], []
        for _ in range(opts.rounds):
            single_rates.append(
                rate(lambda: local.collect(learner, warmup=False).env_steps, opts.seconds)
            )
            ray_rates.append(ray_rate(many, opts.seconds))
        local.close()
        many.close()
    finally:
        if started:
            ray.shutdown()
    single, ray_ = float(np.median(single_rates)), float(np.median(ray_rates))
    return {
        "single_env_steps_per_s": single,
        "ray_env_steps_per_s": ray_,
        "speedup": ray_ / single,
        "speedup_per_round": [r / s for r, s in zip(ray_rates, single_rates, strict=True)],
        "ray_workers": opts.workers,
        "per_worker_env_steps_per_s": per_worker,
        "collection_envs_per_collector": cfg.n_envs,
        "vector_steps_per_call": runner.get("vector_steps_per_call"),
        "calls_in_flight": runner.get("calls_in_flight"),
        "load_average_1min": os.getloadavg()[0],
    }


def _learner(task, base, obs_dim: int, cfg, figures: dict, updates: int = 300) -> dict:
    learner = DSRL(base, obs_dim, cfg)
    collector = VectorCollector(task_vector_env(task, learner, cfg.n_envs), cfg.seed)
    batches = []
    while sum(len(b) for b in batches) < 4 * cfg.sac.batch_size:
        batches.append(collector.collect(learner, warmup=True))
    collector.close()
    updates_per_s = 1.0 / _seconds_per_update(learner, batches, updates, untimed=20)
    ingest = updates_per_s / cfg.sac.utd_ratio
    ingest_env_steps = ingest * learner.n_action_steps
    out = {
        "learner_updates_per_s": updates_per_s,
        "learner_ingest_per_s": ingest,
        "learner_ingest_env_steps_per_s": ingest_env_steps,
        "utd_ratio": cfg.sac.utd_ratio,
    }
    per_worker = figures.get("per_worker_env_steps_per_s")
    if per_worker:
        out["workers_one_learner_can_feed"] = ingest_env_steps / per_worker
    out["learner_sizes"] = _learner_sizes(base, obs_dim, cfg, batches)
    return out


# (hidden widths, batch): the default, the SAC paper's, and sizes that need a GPU
LEARNER_SIZES = (((128, 128), 128), ((256, 256), 256), ((512,) * 3, 256), ((1024,) * 3, 1024))


def _learner_sizes(base, obs_dim: int, cfg, batches, updates: int = 40) -> list[dict]:
    """Updates/s of the learner at bigger sizes, on the CPU (one thread; the biggest skipped:
    already 512x3 runs at about 11 updates/s there) and on CUDA when there is a GPU: how the
    learner side of a cluster scales with the hardware it gets."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = []
    for device in devices:
        for hidden, batch in LEARNER_SIZES if device == "cuda" else LEARNER_SIZES[:3]:
            sac = replace(cfg.sac, hidden_dims=hidden, batch_size=batch, device=device)
            learner = DSRL(base, obs_dim, replace(cfg, sac=sac))
            seconds = _seconds_per_update(learner, batches, updates, untimed=10)
            sizes.append(
                {
                    "device": device,
                    "hidden_dims": list(hidden),
                    "batch_size": batch,
                    "updates_per_s": 1.0 / seconds,
                }
            )
    return sizes


def _dsrl(task, base_path, base, obs_dim: int, cfg, opts: ScaleBench, runner: dict) -> dict:
    from robot_rl.distributed.ray_runner import RayRunnerConfig, kill_worker_after, train_dsrl_ray

    base_eval = evaluate(base, task, opts.eval_episodes, 16, 20_000, progress=False)
    runs: dict[str, list[dict]] = {"single": [], "ray": []}
    restarts = crashes = 0
    for i, seed in enumerate(opts.seeds):
        seed_cfg = replace(cfg, seed=seed, env_steps=opts.env_steps, eval_every=opts.eval_every)
        print(f"[bench scale] single-process seed {seed}", flush=True)
        learner = DSRL(base, obs_dim, seed_cfg)
        start = time.perf_counter()
        history = train_dsrl(
            learner,
            task,
            out=Path(opts.out) / f"single_seed{seed}",
            resume=False,
            progress=False,
            base_success=base_eval.success_rate,
        )
        runs["single"].append(
            _result(learner, task, history, time.perf_counter() - start, seed, opts)
        )

        print(f"[bench scale] ray ({opts.workers} workers) seed {seed}", flush=True)
        kill = opts.kill_at is not None and i == 0
        out = Path(opts.out) / f"ray_seed{seed}"
        _clear(out)
        run = train_dsrl_ray(
            base_path,
            task,
            seed_cfg,
            obs_dim,
            RayRunnerConfig(**{**runner, "workers": opts.workers}),
            out=out,
            progress=False,
            base_success=base_eval.success_rate,
            on_start=(
                (lambda h: kill_worker_after(h, int(opts.kill_at * opts.env_steps)))
                if kill
                else None
            ),
        )
        learner = DSRL(base, obs_dim, seed_cfg)
        learner.load_acting_weights(run.weights)
        result = _result(learner, task, run.history, run.wall_s, seed, opts)
        result.update(
            worker_restarts=run.collector["worker_restarts"],
            dropped_transitions=run.collector["dropped_transitions"],
            learner_crashes=run.learner_crashes,
            worker_killed=kill,
            collection_env_steps_per_s=run.collector["env_steps_per_s"],
            startup_s=run.collector["startup_s"],
        )
        runs["ray"].append(result)
        restarts += run.collector["worker_restarts"]
        crashes += run.learner_crashes

    def summary(name):
        values = [r["final_success"] for r in runs[name]]
        mean, lo, hi = mean_interval(values)
        return {
            "final_success_median": float(np.median(values)),
            "final_success_mean": mean,
            "final_success_mean_ci95": [lo, hi],
            "run_env_steps_per_s_median": float(
                np.median([r["run_env_steps_per_s"] for r in runs[name]])
            ),
            "per_seed": runs[name],
        }

    single, ray_ = summary("single"), summary("ray")
    singles = [r["final_success"] for r in runs["single"]]
    gap, gap_lo, gap_hi = mean_interval(
        [r["final_success"] - s for r, s in zip(runs["ray"], singles, strict=True)]
    )
    return {
        "base_success": base_eval.success_rate,
        "dsrl_env_steps": opts.env_steps,
        "single_success": single["final_success_median"],
        "ray_success": ray_["final_success_median"],
        # the same success: the Ray median inside the single-process seeds' spread, and the
        # paired (same seed) Ray - single difference's 95% interval holds zero
        "ray_success_within_single_spread": bool(
            min(singles) <= ray_["final_success_median"] <= max(singles)
        ),
        "success_gap_ray_minus_single": gap,
        "success_gap_ci95": [gap_lo, gap_hi],
        "single_run_env_steps_per_s": single["run_env_steps_per_s_median"],
        "ray_run_env_steps_per_s": ray_["run_env_steps_per_s_median"],
        "worker_restarts": restarts,
        "learner_crashes": crashes,
        "runs": {"single": single, "ray": ray_},
    }


def _learner_drill(task, base_path, obs_dim: int, cfg, out: Path) -> dict:
    import ray

    from robot_rl.distributed.ray_runner import RayRunnerConfig, train_dsrl_ray

    drill_cfg = replace(cfg, env_steps=3_000, eval_every=1_000, eval_episodes=10)
    killed: list[int] = []

    def kill_learner(learner) -> None:
        def drill():
            while ray.get(learner.status.remote())["env_steps"] < 1_500:
                time.sleep(0.3)
            killed.append(ray.get(learner.pid.remote()))
            os.kill(killed[-1], signal.SIGKILL)

        threading.Thread(target=drill, daemon=True).start()

    _clear(out / "learner_drill")
    run = train_dsrl_ray(
        base_path,
        task,
        drill_cfg,
        obs_dim,
        RayRunnerConfig(workers=2),
        out=out / "learner_drill",
        progress=False,
        base_success=0.0,
        on_start=kill_learner,
    )
    return {
        "learner_drill": {
            "learner_killed": len(killed),
            "learner_restarts_seen": run.learner_crashes,
            "completed_env_steps": run.history.env_steps[-1],
            "evaluations_at": run.history.env_steps,
            "env_steps_after_restart": run.collector["env_steps"],
            "wall_s": run.wall_s,
        }
    }


def _result(learner: DSRL, task, history, wall_s: float, seed: int, opts: ScaleBench) -> dict:
    final = evaluate(learner.policy, task, opts.eval_episodes, 16, 20_000, progress=False)
    return {
        "seed": seed,
        "final_success": final.success_rate,
        "final_success_ci95": list(final.success_ci95),
        "env_steps": history.env_steps[-1],
        "wall_s": wall_s,
        "run_env_steps_per_s": history.env_steps[-1] / wall_s,
        "updates": history.updates,
        "curve": {"env_steps": history.env_steps, "success": history.success},
    }


def _clear(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
