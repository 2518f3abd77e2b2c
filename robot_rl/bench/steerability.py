"""How far can steering this base go, and how hard is the steering to learn?
(:mod:`robot_rl.eval.steerability`; nothing is trained but a small selector).

``python -m robot_rl.bench steerability --out F.json base=runs/base_push/policy`` writes the
base's own success, the fixed-noise success matrix's figures (best single noise, coverage, the
greedy cover curve), a held-out selector's success for growing numbers of fitted starts, and
the outcome agreement under small start perturbations; ``plot=`` names a PNG of the selector
curve against the coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl import config
from robot_rl.bench.common import bench_options
from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.eval.media import plot_curve
from robot_rl.eval.rollout import evaluate
from robot_rl.eval.steerability import (
    fixed_noise_outcomes,
    perturbation_agreement,
    selector_success,
)
from robot_rl.jobs.improve import check_base_matches_task
from robot_rl.policies import load_policy


@dataclass
class SteerabilityBench:
    """Settings (``key=value`` on the command line)."""

    base: str = "runs/base_push/policy"
    """the steerable base policy's checkpoint folder"""
    task: str = "push"
    """task config name"""
    noises: int = 16
    """fixed noise vectors, drawn from N(0, I) like the base's"""
    noise_seed: int = 0
    """seed of the noise vectors"""
    starts: int = 500
    """start states, each run with every noise (starts x noises episodes)"""
    seed: int = 20_000
    """seed of the first start state"""
    train_starts: list[int] = field(default_factory=lambda: [50, 100, 200, 400])
    """numbers of starts the selector is fitted on (the first ones)"""
    test_starts: int = 100
    """held-out starts (the last ones) the selector is scored on"""
    perturb_starts: int = 25
    """starts of the perturbation check (0 skips it)"""
    perturb_noises: int = 4
    """the best this many noises are run from the perturbed starts"""
    perturbations: list[list[float]] = field(default_factory=lambda: [[0.001, 0.02], [0.003, 0.06]])
    """[slide m, hinge rad] scales of the start perturbations"""
    copies: int = 7
    """perturbed copies per start and noise"""
    plot: str | None = None
    """PNG of the selector's success against the coverage"""


def run(overrides: list[str]) -> dict:
    opts: SteerabilityBench = bench_options(SteerabilityBench, overrides)
    job = config.load_job("improve", config.ImproveJob, [f"task={opts.task}"])
    task = job.task.build()
    base = load_policy(opts.base)
    check_base_matches_task(base, task)
    if not isinstance(base, SteerableChunkPolicy):
        raise TypeError(
            f"{opts.base} holds a {type(base).__name__}, which takes no latent noise: the "
            "steerability bench needs a steerable policy (diffusion or flow)"
        )
    noises = (
        np.random.default_rng(opts.noise_seed)
        .standard_normal((opts.noises, *base.noise_shape))
        .astype(np.float32)
    )
    base_eval = evaluate(base, task, opts.starts, seed=opts.seed, progress=False)
    outcomes = fixed_noise_outcomes(base, task, noises, opts.starts, opts.seed)
    per_noise = outcomes.success.mean(axis=0)
    selector = selector_success(outcomes, opts.train_starts, opts.test_starts)
    held_out = outcomes.success[-opts.test_starts :]
    figures = {
        "base": opts.base,
        "task": task.name,
        "noises": opts.noises,
        "starts": opts.starts,
        "base_success": base_eval.success_rate,
        "base_ci95": list(base_eval.success_ci95),
        "fixed_noise_success_mean": float(per_noise.mean()),
        "best_single_noise_success": float(per_noise.max()),
        "per_noise_success": per_noise.round(4).tolist(),
        "coverage": outcomes.coverage,
        "greedy_cover": outcomes.greedy_cover(8),
        "held_out_coverage": float(held_out.any(axis=1).mean()),
        "selector": selector,
    }
    if opts.perturb_starts > 0:
        best = noises[np.argsort(-per_noise)[: opts.perturb_noises]]
        figures["perturbation"] = [
            perturbation_agreement(
                base, task, best, opts.perturb_starts, opts.seed, slide, hinge, opts.copies
            )
            for slide, hinge in opts.perturbations
        ]
    if opts.plot:
        n = [row["labelled_episodes"] for row in selector]
        plot_curve(
            n,
            {
                "selector (held-out starts)": [row["success"] for row in selector],
                "coverage of the held-out starts": [figures["held_out_coverage"]] * len(n),
                "best single noise": [figures["best_single_noise_success"]] * len(n),
                "base": [figures["base_success"]] * len(n),
            },
            opts.plot,
            "labelled episodes (fitted starts x noises)",
            "success",
            f"steering {task.name}: {opts.noises} fixed noises",
            log_x=True,
        )
    return figures
