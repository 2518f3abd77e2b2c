"""Pictures for people: rollout videos (mp4) and result plots (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on robots' computers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from robot_rl.core.policy import ChunkPolicy  # noqa: E402
from robot_rl.core.task import TaskConfig  # noqa: E402


def record_video(
    policy: ChunkPolicy,
    task: TaskConfig,
    path: str | Path,
    episodes: int = 2,
    seed: int = 0,
    fps: int = 20,
) -> Path:
    """Roll out ``episodes`` episodes with rendering and write them one after another as mp4."""
    import imageio.v2 as imageio

    from robot_rl.eval.rollout import make_policy_env

    env = make_policy_env(task, policy, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            policy.reset()
            frames.append(env.render())
            done = False
            while not done:
                batch = {k: v[None] for k, v in obs.items()}
                for action in policy.act(batch)[0]:
                    obs, _, terminated, truncated, _ = env.env.step(action)
                    frames.append(env.render())
                    done = terminated or truncated
                    if done:
                        break
            frames.extend([frames[-1]] * (fps // 2))  # hold the last frame between episodes
    finally:
        env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=1, quality=7)
    return path


def plot_success(
    results: dict[str, tuple[float, float, float]], path: str | Path, title: str
) -> Path:
    """Bar chart of success rates with their 95% intervals: ``{label: (rate, lo, hi)}``."""
    labels = list(results)
    rates = np.array([results[k][0] for k in labels])
    err = np.maximum(
        0.0,
        np.array(
            [[r - results[k][1], results[k][2] - r] for k, r in zip(labels, rates, strict=False)]
        ).T,
    )
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 3.2))
    ax.bar(labels, 100 * rates, yerr=100 * err, capsize=6, color="#4C72B0")
    for i, r in enumerate(rates):
        ax.text(i, 100 * r + 2, f"{100 * r:.0f}%", ha="center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_curve(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    log_x: bool = False,
) -> Path:
    """Line plot of one or more curves sharing an x axis (loss, success vs env steps, ...);
    ``log_x`` for x values spread over decades (each point marked)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, y in ys.items():
        ax.plot(x, y, label=label, marker="o" if log_x else None)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ys) > 1:
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
