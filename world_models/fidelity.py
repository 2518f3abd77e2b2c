"""How faithful a state world model is on held-out real episodes.

* k-step error: from every held-out frame t with t + k stored in its episode, roll the model
  open-loop through the real actions a_t .. a_t+k-1 (members' mean) and compare with s_t+k;
  RMSE over state features in the store's standardised units, beside the error of predicting
  "nothing moves" (s_t+k = s_t) for scale.
* success head: accuracy, balanced accuracy, precision and recall on the held-out steps.
* episode success: from each held-out episode's first state, the real actions replayed in the
  model for the whole episode; does the model see success in the episodes that succeeded?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robot_rl.data import EpisodeStore
from robot_rl.eval.media import _save, plt
from world_models.state_model import StateWorldModel
from world_models.train import Frames, load_frames


@torch.no_grad()
def kstep_errors(model: StateWorldModel, frames: Frames, max_k: int = 20) -> dict[int, dict]:
    """``{k: {"rmse", "copy_rmse", "windows"}}`` for k = 1..max_k (standardised units)."""
    state = torch.from_numpy(frames.state)
    action = torch.from_numpy(frames.action)
    ends = np.repeat(frames.ends, frames.ends - frames.starts)
    index = np.arange(len(state))
    current = state.clone()
    out: dict[int, dict] = {}
    for k in range(1, max_k + 1):
        live = index + k < ends  # s_t+k is stored in the same episode
        if not live.any():
            break
        step = torch.from_numpy(np.minimum(index + k - 1, ends - 1))
        current = model.next(current, action[step]).mean(dim=0)
        current = torch.where(torch.isfinite(current), current, state)
        target = state[torch.from_numpy(np.minimum(index + k, ends - 1))]
        err = (model.normalize(current) - model.normalize(target)) ** 2
        copy = (model.normalize(state) - model.normalize(target)) ** 2
        mask = torch.from_numpy(live)
        out[k] = {
            "rmse": float(err[mask].mean().sqrt()),
            "copy_rmse": float(copy[mask].mean().sqrt()),
            "windows": int(live.sum()),
        }
    return out


@torch.no_grad()
def success_head_accuracy(model: StateWorldModel, frames: Frames) -> dict:
    """Step-level classification of ``is_success`` on held-out steps (threshold 0.5)."""
    s, a = torch.from_numpy(frames.state), torch.from_numpy(frames.action)
    _, logit, _ = model.outcome(s, a, model.next(s, a).mean(dim=0))
    pred = (logit > model.success_threshold).numpy()
    true = frames.is_success
    tp, tn = int((pred & true).sum()), int((~pred & ~true).sum())
    fp, fn = int((pred & ~true).sum()), int((~pred & true).sum())
    recall = tp / max(tp + fn, 1)
    specificity = tn / max(tn + fp, 1)
    return {
        "accuracy": (tp + tn) / len(true),
        "balanced_accuracy": 0.5 * (recall + specificity),
        "precision": tp / max(tp + fp, 1),
        "recall": recall,
        "positives": tp + fn,
        "steps": len(true),
    }


@torch.no_grad()
def episode_success_agreement(model: StateWorldModel, frames: Frames) -> dict:
    """Replays each episode's real actions from its first state in the model; the model's
    episode success is any step whose success probability exceeds 0.5."""
    imagined, real = [], []
    for start, end in zip(frames.starts, frames.ends, strict=True):
        s = torch.from_numpy(frames.state[start : start + 1])
        hit = False
        for t in range(start, end):
            a = torch.from_numpy(frames.action[t : t + 1])
            nxt = model.next(s, a).mean(dim=0)
            _, logit, _ = model.outcome(s, a, nxt)
            if logit.item() > model.success_threshold.item():
                hit = True
                break
            s = nxt
        imagined.append(hit)
        real.append(bool(frames.is_success[start:end].any()))
    imagined_arr, real_arr = np.array(imagined), np.array(real)
    return {
        "agreement": float((imagined_arr == real_arr).mean()),
        "imagined_success_rate": float(imagined_arr.mean()),
        "real_success_rate": float(real_arr.mean()),
        "episodes": len(real),
    }


def fidelity_report(
    model: StateWorldModel,
    store_path: str | Path,
    episodes: list[int] | np.ndarray,
    out: str | Path | None = None,
    max_k: int = 20,
) -> dict:
    """k-step errors, success-head accuracy and episode-success agreement on ``episodes`` of
    the store (the held-out ones); with ``out`` also ``kstep_error.png`` and
    ``trajectory.png`` (one held-out episode, real vs replayed in the model)."""
    if len(episodes) == 0:
        raise ValueError("no held-out episodes: train with held_out > 0 for a fidelity report")
    with EpisodeStore.open(store_path) as store:
        frames = load_frames(store).select(np.asarray(episodes))
    errors = kstep_errors(model, frames, max_k)
    report = {
        "kstep": {str(k): v for k, v in errors.items()},
        "success_head": success_head_accuracy(model, frames),
        "episode_success": episode_success_agreement(model, frames),
        "held_out_episodes": len(episodes),
    }
    if out is not None:
        out = Path(out)
        report["plots"] = [
            str(_plot_kstep(errors, out / "kstep_error.png")),
            str(_plot_trajectory(model, frames, out / "trajectory.png")),
        ]
    return report


def _plot_kstep(errors: dict[int, dict], path: Path) -> Path:
    ks = sorted(errors)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, [errors[k]["rmse"] for k in ks], "o-", label="world model (open loop)")
    ax.plot(ks, [errors[k]["copy_rmse"] for k in ks], "s--", label="nothing moves")
    ax.set_xlabel("k (steps predicted open-loop)")
    ax.set_ylabel("state RMSE (standardised)")
    ax.set_title("k-step error on held-out real episodes")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


@torch.no_grad()
def _plot_trajectory(model: StateWorldModel, frames: Frames, path: Path) -> Path:
    longest = int(np.argmax(frames.ends - frames.starts))
    start, end = int(frames.starts[longest]), int(frames.ends[longest])
    real = frames.state[start:end]
    s = torch.from_numpy(real[:1])
    imagined = [real[0]]
    for t in range(start, end - 1):
        s = model.next(s, torch.from_numpy(frames.action[t : t + 1])).mean(dim=0)
        imagined.append(s[0].numpy())
    imagined_arr = np.stack(imagined)
    d = real.shape[1]
    cols = min(d, 5)
    rows = -(-d // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= d:
            ax.axis("off")
            continue
        ax.plot(real[:, i], "k-", label="real")
        ax.plot(imagined_arr[:, i], "r--", label="imagined")
        ax.set_title(f"state[{i}]", fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("held-out episode: real vs replayed in the model (same actions)", fontsize=9)
    return _save(fig, path)
