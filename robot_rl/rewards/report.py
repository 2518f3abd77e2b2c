"""How a reward model scores a store's episodes: AUROC for success, Spearman correlation with
task progress, and a PNG of reward curves over episodes, successful vs failed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from robot_rl.core import keys  # noqa: E402
from robot_rl.core.reward import RewardModel  # noqa: E402
from robot_rl.rewards.frames import LabelledFrames  # noqa: E402
from robot_rl.rewards.metrics import auroc, spearman  # noqa: E402


def score_frames(
    model: RewardModel,
    frames: LabelledFrames,
    image_key: str,
    batch: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """The model's reward on every frame ``[N]``, in batches."""
    out = []
    for i in tqdm(range(0, len(frames), batch), desc="reward", disable=not progress, leave=False):
        obs = {image_key: frames.images[i : i + batch]}
        if frames.states is not None:
            obs[keys.STATE] = frames.states[i : i + batch]
        out.append(np.asarray(model(obs), dtype=np.float32))
    return np.concatenate(out)


def reward_figures(rewards: np.ndarray, frames: LabelledFrames) -> dict:
    """AUROC of the reward for the per-frame success label; Spearman correlation between the
    reward and progress (t / (T - 1)) over the frames of successful episodes, where time is
    progress; mean reward of frames of successful vs failed episodes."""
    ok = frames.episode_success
    return {
        "auroc": auroc(rewards, frames.labels),
        "spearman_progress": spearman(rewards[ok], frames.progress[ok]) if ok.any() else None,
        "mean_reward_success_frames": float(rewards[frames.labels].mean()),
        "mean_reward_other_frames": float(rewards[~frames.labels].mean()),
        "frames": len(frames),
        "episodes": int(len(np.unique(frames.episode))),
    }


def plot_reward_curves(
    curves: dict[str, np.ndarray], frames: LabelledFrames, path: str | Path, max_lines: int = 25
) -> Path:
    """One panel per model: reward over each episode's steps, successful episodes green, failed
    red (thin lines, up to ``max_lines`` each), with each group's mean (thick)."""
    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.4), squeeze=False)
    episodes = np.unique(frames.episode)
    for ax, name in zip(axes[0], names, strict=True):
        rewards = curves[name]
        for success, colour, label in (
            (True, "tab:green", "successful"),
            (False, "tab:red", "failed"),
        ):
            chosen = [
                e for e in episodes if frames.episode_success[frames.episode == e][0] == success
            ]
            series = [rewards[frames.episode == e] for e in chosen]
            for s in series[:max_lines]:
                ax.plot(s, color=colour, alpha=0.15, lw=0.8)
            if series:
                length = max(len(s) for s in series)
                padded = np.full((len(series), length), np.nan)
                for i, s in enumerate(series):
                    padded[i, : len(s)] = s
                ax.plot(
                    np.nanmean(padded, 0), color=colour, lw=2.2, label=f"{label} ({len(series)})"
                )
        ax.set_title(name)
        ax.set_xlabel("step in episode")
        ax.set_ylabel("reward")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
