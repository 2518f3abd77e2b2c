"""DSRL suite: the base policy, DSRL-SAC, DSRL-NA and Stable-Baselines3's SAC (a Gaussian
policy in raw action space, from scratch) on the same task, base and env-step budget, over
seeds, side by side in one process. Medians over seeds at the top level, per-seed values under
``methods``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.bench.common import pretrain_base
from robot_rl.bench.sb3 import sb3_sac_run, sb3_update_timer
from robot_rl.eval.rollout import evaluate
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import train_dsrl
from robot_rl.jobs.improve import check_base_matches_task, dsrl_config
from robot_rl.policies import load_policy
from robot_rl.rl.replay import ReplayBuffer
from robot_rl.rl.sac import SAC, SACConfig


@dataclass
class DSRLBench:
    """Settings of the DSRL benchmark (``key=value`` on the command line)."""

    task: str = "push"
    """task config name"""
    base: str | None = None
    """checkpoint of the base policy; None pretrains one with the demo's settings"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of every learner"""
    env_steps: int = 30_000
    """env-step budget of every learner"""
    methods: list[str] = field(default_factory=lambda: ["dsrl_sac", "dsrl_na", "sb3_sac"])
    """methods to run"""
    eval_episodes: int = 100
    """episodes of the base and final evaluations"""
    eval_every: int = 3_000
    """env steps between learning-curve evaluations"""
    out: str = "reports/bench-dsrl"
    """folder for learning curves"""
    improver: list[str] = field(default_factory=list)
    """overrides of configs/improver/dsrl.yaml for both variants, e.g. ['sac.utd_ratio=4']"""
    na_settings: list[str] = field(
        default_factory=lambda: ["sac.utd_ratio=1", "sac.batch_size=128", "distill_batch=128"]
    )
    """DSRL-NA's changes to the improver config: each of its updates denoises two batches
    through the base (next chunks for the action critic, chunks for distillation), so on 2
    CPU cores it runs fewer, smaller updates to stay within the wall-time budget"""


def run(overrides: list[str]) -> dict:
    opts: DSRLBench = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(DSRLBench), OmegaConf.from_dotlist(overrides))
    )
    task = config.load_job("improve", config.ImproveJob, [f"task={opts.task}"]).task.build()
    improver = config.load_job(
        "improve", config.ImproveJob, [f"improver.{o}" for o in opts.improver]
    ).improver
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_dsrl_") as tmp:
        base_path = opts.base or pretrain_base(opts.task, Path(tmp))
        base = load_policy(base_path)
        obs_dim = check_base_matches_task(base, task)
        base_eval = evaluate(base, task, opts.eval_episodes, 16, 20_000, progress=False)
        results = {name: [] for name in opts.methods}
        for seed in opts.seeds:
            for name in opts.methods:
                print(f"[bench dsrl] {name} seed {seed}", flush=True)
                if name == "sb3_sac":
                    results[name].append(
                        sb3_sac_run(task, opts.env_steps, seed, opts.eval_every, opts.eval_episodes)
                    )
                    continue
                settings = improver
                if name == "dsrl_na":
                    settings = OmegaConf.to_container(
                        OmegaConf.merge(improver, OmegaConf.from_dotlist(opts.na_settings))
                    )
                cfg = replace(
                    dsrl_config(settings),
                    variant=name.removeprefix("dsrl_"),
                    seed=seed,
                    env_steps=opts.env_steps,
                    eval_every=opts.eval_every,
                )
                results[name].append(
                    _dsrl_run(base, obs_dim, task, cfg, base_eval.success_rate, opts)
                )
    methods = {name: _summarise(runs) for name, runs in results.items()}
    dsrl = [m for m in ("dsrl_sac", "dsrl_na") if m in methods]
    best = max(dsrl, key=lambda m: methods[m]["final_success"]) if dsrl else None
    figures = {
        "task": task.name,
        "base_checkpoint": str(base_path),
        "best_variant": best,
        "base_success": base_eval.success_rate,
        "base_success_ci95": list(base_eval.success_ci95),
        "seeds": opts.seeds,
        "methods": methods,
    }
    if best:
        figures.update(
            {
                k: methods[best][k]
                for k in (
                    "final_success",
                    "env_steps_to_90",
                    "env_steps",
                    "wall_s",
                    "updates_per_s",
                )
            }
        )
    ours, theirs = sac_updates_per_s(obs_dim, int(np.prod(base.noise_shape)))
    figures.update(
        sac_updates_per_s=ours, sb3_sac_updates_per_s=theirs, sb3_updates_ratio=ours / theirs
    )
    return figures


def _dsrl_run(base, obs_dim, task, cfg: DSRLConfig, base_success: float, opts: DSRLBench) -> dict:
    learner = DSRL(base, obs_dim, cfg)
    out = Path(opts.out) / f"{cfg.variant}_seed{cfg.seed}"
    start = time.perf_counter()
    history = train_dsrl(
        learner, task, out=out, resume=False, progress=False, base_success=base_success
    )
    wall = time.perf_counter() - start
    final = evaluate(learner.policy, task, opts.eval_episodes, 16, 20_000, progress=False)
    return {
        "seed": cfg.seed,
        "base_success": base_success,
        "final_success": final.success_rate,
        "final_success_ci95": list(final.success_ci95),
        "env_steps_to_90": history.steps_to(0.9),
        "env_steps": history.env_steps[-1],
        "wall_s": wall,
        "updates_per_s": history.updates / max(history.update_wall_s, 1e-9),
        "curve": {"env_steps": history.env_steps, "success": history.success},
    }


def _summarise(runs: list[dict]) -> dict:
    def median(key):
        values = [r[key] for r in runs]
        if any(v is None for v in values):  # a seed that never reached 90%: the median is unknown
            values = [np.inf if v is None else v for v in values]
        m = float(np.median(values))
        return None if np.isinf(m) else m

    keys = (
        "base_success",
        "final_success",
        "env_steps_to_90",
        "env_steps",
        "wall_s",
        "updates_per_s",
    )
    return {**{k: median(k) for k in keys}, "per_seed": runs}


def sac_updates_per_s(
    obs_dim: int, act_dim: int, rounds: int = 7, updates: int = 100, hidden=(256, 256)
) -> tuple[float, float]:
    """Our SAC's and SB3's gradient updates/s on the same sizes (batch 256 sampled from a
    replay buffer, twin critics, no LayerNorm as SB3 has none), measured in alternating rounds
    so that the machine's load hits both alike, on one thread each (two threads on two shared
    cores swing by 20% from round to round); medians over rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _alternating_update_rates(obs_dim, act_dim, rounds, updates, hidden)
    finally:
        torch.set_num_threads(threads)


def _alternating_update_rates(obs_dim, act_dim, rounds, updates, hidden) -> tuple[float, float]:
    sac = SAC(obs_dim, act_dim, SACConfig(hidden_dims=hidden, layer_norm=False))
    replay = ReplayBuffer(obs_dim, act_dim, 1024)
    g = torch.Generator().manual_seed(0)
    replay.add(
        torch.randn(1024, obs_dim, generator=g),
        torch.rand(1024, act_dim, generator=g) * 2 - 1,
        torch.randn(1024, generator=g),
        torch.randn(1024, obs_dim, generator=g),
        torch.full((1024,), 0.99),
    )

    def ours(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            sac.update(replay.sample(256, g))
        return time.perf_counter() - start

    theirs = sb3_update_timer(obs_dim, act_dim, hidden)
    ours(20)
    rates = np.array([(updates / ours(updates), updates / theirs(updates)) for _ in range(rounds)])
    return float(np.median(rates[:, 0])), float(np.median(rates[:, 1]))
