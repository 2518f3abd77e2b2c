"""Chunked offline RL suite: from one fixed store (the demos plus base-policy rollouts), with
zero environment steps during training, side by side over seeds: the base policy, plain BC and
filtered BC (successes only) on the same store, best-of-N, EXPO-style and Q-weighted
fine-tuning from one chunk critic per seed; then online fine-tuning of the best-of-N policy for
a fixed env-step budget; and the latency of best-of-N with N = 32 at batch 1.

The base is evaluated once per seed as well (its own sampling noise seeded like the
learners'), on the same start states as every method. Top-level figures are medians over seeds
(per-seed values under ``seeds``); every success rate also has a 95% Wilson interval over all
seeds' episodes pooled (``*_ci95``).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.config import CollectJob
from robot_rl.data import EpisodeStore, WindowSampler
from robot_rl.eval.rollout import evaluate
from robot_rl.eval.stats import percentile, wilson_interval
from robot_rl.jobs.collect import collect
from robot_rl.jobs.improve import check_base_matches_task
from robot_rl.jobs.offline import offline_config
from robot_rl.offline.online import train_online
from robot_rl.offline.pipeline import ChunkedOffline
from robot_rl.offline.policies import BestOfNPolicy
from robot_rl.policies import load_policy
from robot_rl.train.pretrain import pretrain

OFFLINE_METHODS = ("bc", "filtered_bc", "best_of_n", "best_of_n_fast", "expo", "q_weighted")


@dataclass
class ChunkedOfflineBench:
    """Settings of the chunked offline RL benchmark (``key=value`` on the command line)."""

    task: str = "push"
    """task config name"""
    base: str | None = None
    """checkpoint of the base policy; None pretrains one with the demo's settings"""
    demos: str | None = None
    """store of demonstrations; None: ``demos.zarr`` beside the base checkpoint (as ``make demo``
    leaves it), else the pretraining run's"""
    rollouts: int = 300
    """base-policy rollouts added to the demos to make the fixed store"""
    store: str | None = None
    """an existing fixed store to use instead (e.g. made by ``robot-rl collect ... policy_path=``
    with the same base); None makes ``out/store.zarr`` from the demos and ``rollouts``"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of every learner"""
    methods: list[str] = field(default_factory=lambda: [*OFFLINE_METHODS, "online"])
    """methods to run ('online' continues the best-of-N policy online)"""
    eval_episodes: int = 100
    """episodes per final evaluation of every method and seed"""
    bc_steps: int = 1_000
    """BC and filtered-BC steps, continuing the base's weights on the store (batch 256)"""
    online_env_steps: int = 10_000
    """online env-step budget after offline training"""
    fast_inference_steps: int = 2
    """DDIM steps of the N samples for 'best_of_n_fast' (best-of-N with a cheaper sampler than
    the config's ``best_of_n.inference_steps``)"""
    latency_n: int = 32
    """N of the best-of-N latency measurement (batch 1)"""
    latency_calls: int = 200
    """timed best-of-N calls"""
    improver: list[str] = field(default_factory=list)
    """overrides of configs/improver/chunked_offline.yaml, e.g. ['critic.updates=3000']"""
    out: str = "reports/bench-chunked-offline"
    """folder for the fixed store and the extracted policies"""


def run(overrides: list[str]) -> dict:
    opts: ChunkedOfflineBench = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ChunkedOfflineBench), OmegaConf.from_dotlist(overrides)
        )
    )
    job = config.load_job(
        "improve",
        config.ImproveJob,
        [
            f"task={opts.task}",
            "improver=chunked_offline",
            *[f"improver.{o}" for o in opts.improver],
        ],
    )
    task = job.task.build()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_offline_") as tmp:
        base_path, demos = _base_and_demos(opts, job, Path(tmp))
        store = Path(opts.store) if opts.store else None
        if store is None:
            store = _fixed_store(opts, job, base_path, demos, out / "store.zarr")
        base = load_policy(base_path)
        check_base_matches_task(base, task)
        cfg = replace(offline_config(job.improver), store=[str(store)])
        print(
            f"[bench chunked_offline] base evaluation ({opts.eval_episodes} episodes)", flush=True
        )
        base_eval = _eval(base, task, opts)
        # data + base samples, once for all seeds (cached in out/, reused by a re-run)
        shared = ChunkedOffline(base, cfg, out=out / "shared", progress=False)
        shared.close()
        seeds = [_one_seed(opts, cfg, base, base_path, store, shared, task, s) for s in opts.seeds]
        latency = best_of_n_latency(shared.best_of_n(), shared, opts.latency_n, opts.latency_calls)
        fast = with_steps(shared.best_of_n(), opts.fast_inference_steps)
        latency["fast"] = best_of_n_latency(fast, shared, opts.latency_n, opts.latency_calls)
    return _figures(opts, task.name, base_path, store, base_eval, seeds, latency, cfg)


def _base_and_demos(opts: ChunkedOfflineBench, job, tmp: Path) -> tuple[str, str]:
    if opts.base is not None:
        if opts.store:
            return opts.base, opts.demos or ""
        demos = opts.demos or str(Path(opts.base).parent / "demos.zarr")
        if not Path(demos).is_dir():
            raise FileNotFoundError(
                f"no demonstration store at {demos}; pass demos=<store> with the base's demos"
            )
        return opts.base, demos
    from robot_rl.jobs.demo import demo

    print("[bench chunked_offline] pretraining a base with the demo's settings", flush=True)
    demo_job = config.load_job(
        "demo", config.DemoJob, [f"task={opts.task}", f"out={tmp / 'demo'}", "~improver"]
    )
    demo(demo_job)
    return str(tmp / "demo" / "policy"), opts.demos or str(tmp / "demo" / "demos.zarr")


def _fixed_store(opts, job, base_path: str, demos: str, store: Path) -> Path:
    """The demos plus ``rollouts`` base rollouts (fixed seeds); reused when already made."""
    if store.is_dir():
        existing = EpisodeStore.open(store)
        if existing.n_episodes == EpisodeStore.open(demos).n_episodes + opts.rollouts:
            return store
        shutil.rmtree(store)
    print(f"[bench chunked_offline] fixed store: {demos} + {opts.rollouts} rollouts", flush=True)
    partial = store.with_name(store.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(demos, partial)
    rollouts = CollectJob(
        task=job.task,
        store=str(partial),
        episodes=0,
        policy_path=base_path,
        policy_episodes=opts.rollouts,
    )
    collect(rollouts, progress=False)
    partial.rename(store)
    return store


def _one_seed(opts, cfg, base, base_path, store, shared: ChunkedOffline, task, seed: int) -> dict:
    cfg = replace(cfg, seed=seed)
    result: dict = {"seed": seed, "success": {}, "ci95": {}, "train_wall_s": {}}

    def record(name: str, policy, wall: float) -> None:
        ev = _eval(policy, task, opts)
        result["success"][name], result["ci95"][name] = ev["success"], ev["ci95"]
        result["successes"] = {**result.get("successes", {}), name: ev["wins"]}
        result["train_wall_s"][name] = wall
        print(f"[bench chunked_offline] seed {seed} {name}: {ev['success']:.2f} ({wall:.0f} s)")

    if hasattr(base, "seed"):  # the base's own sampling noise differs per seed, like the others'
        base.seed(seed)
    record("base", base, 0.0)
    for name in ("bc", "filtered_bc"):
        if name in opts.methods:
            start = time.perf_counter()
            policy = _bc(base, store, opts.bc_steps, seed, successes_only=name == "filtered_bc")
            record(name, policy, time.perf_counter() - start)
    run = ChunkedOffline(base, cfg, progress=False, data=shared.data, candidates=shared.candidates)
    start = time.perf_counter()
    run.train_critic()
    critic_wall = time.perf_counter() - start
    result["critic_wall_s"] = critic_wall
    if "best_of_n" in opts.methods:
        record("best_of_n", run.best_of_n(), critic_wall)
    if "best_of_n_fast" in opts.methods:
        fast = with_steps(run.best_of_n(), opts.fast_inference_steps)
        record("best_of_n_fast", fast, critic_wall)
    if "expo" in opts.methods:
        start = time.perf_counter()
        expo_policy, _ = run.train_expo()
        record("expo", expo_policy, critic_wall + time.perf_counter() - start)
    if "q_weighted" in opts.methods:
        start = time.perf_counter()
        tuned, _ = run.train_q_weighted()
        record("q_weighted", tuned, critic_wall + time.perf_counter() - start)
    if "online" in opts.methods:
        online = replace(cfg.online, env_steps=opts.online_env_steps)
        policy = run.best_of_n()
        start = time.perf_counter()
        history = train_online(
            run.critic,
            policy,
            run.batches,
            task,
            online,
            cfg.critic.samples,
            reward=cfg.reward,
            eval_episodes=cfg.eval_episodes,
            eval_seed=cfg.eval_seed,
            seed=seed,
            progress=False,
        )
        record("online", policy, time.perf_counter() - start)
        result["online_curve"] = {"env_steps": history.env_steps, "success": history.success}
    return result


def _bc(base, store: Path, steps: int, seed: int, successes_only: bool):
    """The base's weights trained further by BC on the store (or its successful episodes)."""
    policy = copy.deepcopy(base).train()
    with EpisodeStore.open(store) as source:
        episodes = np.flatnonzero(source.episode_success) if successes_only else None
        sampler = WindowSampler(
            source,
            list(policy.config.obs_shapes),
            policy.n_obs_steps,
            policy.horizon,
            episodes=episodes,
        )
    pretrain(
        policy, sampler.sample, steps=steps, batch_size=256, lr=1e-4, progress=False, seed=seed
    )
    return policy.eval()


def _eval(policy, task, opts) -> dict:
    result = evaluate(policy, task, opts.eval_episodes, 16, 20_000, progress=False)
    return {
        "success": result.success_rate,
        "ci95": list(result.success_ci95),
        "wins": int(sum(result.successes)),
    }


def with_steps(policy: BestOfNPolicy, steps: int) -> BestOfNPolicy:
    return BestOfNPolicy(policy.base, policy.critic, policy.n, policy.heads, 0, steps)


def best_of_n_latency(policy, shared: ChunkedOffline, n: int, calls: int) -> dict:
    """Per-chunk wall time of best-of-N at batch 1 (N chunks in one base call + scoring)."""
    policy = replace_n(policy, n)
    obs_all = shared.data.frame_obs
    rng = np.random.default_rng(0)
    times = []
    for i in range(calls + 10):
        frame = obs_all[int(rng.integers(len(obs_all)))].numpy()
        obs = {"state": frame.reshape(1, policy.n_obs_steps, -1)}
        start = time.perf_counter()
        policy.predict_chunk(obs)
        if i >= 10:  # warm-up calls (first-call allocations) are not timed
            times.append(1e3 * (time.perf_counter() - start))
    return {
        "n": n,
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "torch_threads": torch.get_num_threads(),
        "inference_steps": policy.sampler.config.num_inference_steps,
    }


def replace_n(policy, n: int):
    policy.n = int(n)
    return policy


def _figures(opts, task, base_path, store, base_eval, seeds, latency, cfg) -> dict:
    names = ["base", *(m for m in (*OFFLINE_METHODS, "online") if m in opts.methods)]
    figures: dict = {
        "task": task,
        "base_checkpoint": str(base_path),
        "store": str(store),
        "store_episodes": EpisodeStore.open(store).n_episodes,
        "base_success_first_evaluation": base_eval["success"],
        "env_steps_during_offline_training": 0,
    }
    n_eval = opts.eval_episodes * len(seeds)
    for name in names:
        values = [s["success"][name] for s in seeds]
        wins = sum(s["successes"][name] for s in seeds)
        figures[f"{name}_success"] = float(np.median(values))
        figures[f"{name}_success_ci95"] = list(wilson_interval(wins, n_eval))
    offline = [m for m in ("best_of_n", "best_of_n_fast", "expo", "q_weighted") if m in names]
    if offline:
        best = max(offline, key=lambda m: figures[f"{m}_success"])
        figures["best_method"] = best
        figures["best_success"] = figures[f"{best}_success"]
        figures["best_success_ci95"] = figures[f"{best}_success_ci95"]
        figures["best_gain_over_base_points"] = 100 * (
            figures["best_success"] - figures["base_success"]
        )
        if "filtered_bc" in names:
            figures["best_beats_filtered_bc"] = (
                figures["best_success"] > figures["filtered_bc_success"]
            )
        figures["train_wall_s"] = float(np.median([s["train_wall_s"][best] for s in seeds]))
    if "online" in names:
        figures["online_success_after_10k"] = figures.pop("online_success")
        figures["online_success_after_10k_ci95"] = figures.pop("online_success_ci95")
        figures["online_env_steps"] = opts.online_env_steps
    figures["train_wall_s_by_method"] = {
        m: float(np.median([s["train_wall_s"][m] for s in seeds])) for m in names if m != "base"
    }
    figures["chunk_latency_ms_p99"] = latency["p99_ms"]
    figures["chunk_latency_ms_p50"] = latency["p50_ms"]
    figures["latency"] = latency
    figures["seeds"] = seeds
    figures["settings"] = {**opts.__dict__, "improver_config": _plain(cfg)}
    return figures


def _plain(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)
