"""Data, fidelity report and benchmark part of the image world model.

Fidelity: from each held-out episode's first frames, the model imagines frame after frame one
chunk at a time, fed its own frames and the episode's real actions; pixel MSE / PSNR against
the real frames at k = 1, 2, 3 chunks (k * Ta steps), beside "nothing moves" (the last real
context frame); the success classifier on real and on imagined frames; a side-by-side mp4
(real | imagined) and PNGs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from robot_rl.core.task import ExpertQuality, TaskConfig, make_env, make_expert
from robot_rl.data import EpisodeStore
from robot_rl.eval.media import _save, plt
from world_models.image_model import (
    FrameData,
    ImageModelConfig,
    ImageWorldModel,
    _to_float,
    context_of,
    load_frame_data,
    train_image_model,
)


def collect_image_store(
    task: TaskConfig,
    path: str | Path,
    camera: str,
    image_size: int,
    expert_episodes: int,
    policy=None,
    policy_episodes: int = 0,
    seed: int = 70_000,
) -> dict:
    """Expert (noise 0.2, 15% suboptimal, as the demo) and policy episodes with ``camera``
    frames, recorded without termination on success so that successful frames are stored."""
    from robot_rl.jobs.collect import _fps, run_expert_episode
    from world_models.rollouts import collect_policy_episodes

    overrides = {"cameras": (camera,), "image_size": image_size, "terminate_on_success": False}
    store = EpisodeStore.create(
        path,
        task=task.name,
        fps=_fps(task),
        source="world_models",
        robot=task.robot,
        overwrite=True,
    )
    env = make_env(task, **overrides)
    expert = make_expert(task, env, ExpertQuality(0.2, 0.15), seed=seed)
    try:
        for i in range(expert_episodes):
            episode, success = run_expert_episode(env, expert, seed=seed + i)
            store.append_episode(episode, success=success)
        if policy is not None and policy_episodes:
            collect_policy_episodes(
                policy,
                task,
                store,
                policy_episodes,
                seed=seed + expert_episodes,
                progress=False,
                **overrides,
            )
        return {"episodes": store.n_episodes, "frames": store.n_frames}
    finally:
        env.close()
        store.close()


@torch.no_grad()
def image_fidelity(
    model: ImageWorldModel, data: FrameData, episodes: np.ndarray, out: Path, chunks: int = 3
) -> dict:
    cfg = model.cfg
    t0 = cfg.context_frames - 1
    need = t0 + chunks * cfg.chunk
    chosen = [e for e in episodes if data.ends[e] - data.starts[e] > need]
    if not chosen:
        raise ValueError(
            f"no held-out episode is longer than {need} steps for a {chunks}-chunk report"
        )
    t = data.starts[np.asarray(chosen)] + t0
    gen = torch.Generator().manual_seed(cfg.seed)
    context = context_of(data, t, cfg)
    last_real = context[:, -3:]
    errors, copy_errors, real_frames, imagined_frames = {}, {}, [], []
    imagined_success, real_success = [], []
    for k in range(1, chunks + 1):
        chunk = torch.from_numpy(data.action[t[:, None] + np.arange(cfg.chunk)[None, :]])
        frame = model.imagine(context, chunk, gen)
        t = t + cfg.chunk
        real = _to_float(data.frames[t])
        errors[k * cfg.chunk] = float(((frame - real) / 2).pow(2).mean())
        copy_errors[k * cfg.chunk] = float(((last_real - real) / 2).pow(2).mean())
        real_frames.append(real)
        imagined_frames.append(frame)
        imagined_success.append(model.success_logit(frame) > 0)
        real_success.append(torch.from_numpy(data.success[t]))
        context = torch.cat([context[:, 3:], frame], dim=1)
    imagined_s = torch.cat(imagined_success).numpy()
    real_s = torch.cat(real_success).numpy()
    held_frames = np.concatenate([np.arange(data.starts[e], data.ends[e]) for e in episodes])
    classifier = _classifier_scores(model, data, held_frames)
    video = _side_by_side(model, data, chosen[:3], out / "real_vs_imagined.mp4")
    grid = _grid(real_frames, imagined_frames, out / "real_vs_imagined.png", cfg.chunk)
    curve = _curve(errors, copy_errors, out / "kstep_error.png")
    return {
        "kstep_mse": {str(k): v for k, v in errors.items()},
        "kstep_psnr_db": {str(k): float(-10 * np.log10(max(v, 1e-10))) for k, v in errors.items()},
        "kstep_mse_nothing_moves": {str(k): v for k, v in copy_errors.items()},
        "success_classifier": classifier,
        "imagined_success_agreement": float((imagined_s == real_s).mean()),
        "episodes": len(chosen),
        "video": str(video),
        "plots": [str(grid), str(curve)],
    }


@torch.no_grad()
def _classifier_scores(model, data: FrameData, frames: np.ndarray) -> dict:
    logits = torch.cat(
        [model.success_logit(_to_float(data.frames[b])) for b in np.array_split(frames, 16)]
    )
    pred, true = (logits > 0).numpy(), data.success[frames]
    tp, tn = int((pred & true).sum()), int((~pred & ~true).sum())
    recall, specificity = tp / max(int(true.sum()), 1), tn / max(int((~true).sum()), 1)
    return {
        "accuracy": float((pred == true).mean()),
        "balanced_accuracy": 0.5 * (recall + specificity),
        "recall": recall,
        "frames": len(frames),
        "positives": int(true.sum()),
    }


def _u8(frame: torch.Tensor, scale: int = 4) -> np.ndarray:
    img = ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(0, -1).numpy()
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


@torch.no_grad()
def _side_by_side(model, data: FrameData, episodes: list, path: Path) -> Path:
    """Real | imagined, one frame per chunk, the imagination fed only its own frames."""
    import imageio.v2 as imageio

    cfg = model.cfg
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    frames = []
    for e in episodes:
        t = np.array([data.starts[e] + cfg.context_frames - 1])
        context = context_of(data, t, cfg)
        frames.append(np.concatenate([_u8(context[0, -3:])] * 2, axis=1))
        while t[0] + cfg.chunk < data.ends[e]:
            chunk = torch.from_numpy(data.action[t[:, None] + np.arange(cfg.chunk)[None, :]])
            frame = model.imagine(context, chunk, gen)
            t = t + cfg.chunk
            real = _to_float(data.frames[t])[0]
            frames.append(np.concatenate([_u8(real), _u8(frame[0])], axis=1))
            context = torch.cat([context[:, 3:], frame], dim=1)
        frames.extend([frames[-1]] * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=2, macro_block_size=1)
    return path


def _grid(real: list, imagined: list, path: Path, chunk: int) -> Path:
    rows = min(4, real[0].shape[0])
    fig, axes = plt.subplots(
        rows, 2 * len(real), figsize=(2.0 * len(real) * 2, 2.0 * rows), squeeze=False
    )
    for r in range(rows):
        for k in range(len(real)):
            for j, (name, frames) in enumerate((("real", real), ("imagined", imagined))):
                ax = axes[r, 2 * k + j]
                ax.imshow(_u8(frames[k][r], 1))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name} +{(k + 1) * chunk}", fontsize=8)
    fig.suptitle("held-out episodes: real vs imagined frames (k chunks ahead)", fontsize=9)
    return _save(fig, path)


def _curve(errors: dict, copy_errors: dict, path: Path) -> Path:
    ks = sorted(errors)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, [errors[k] for k in ks], "o-", label="image world model")
    ax.plot(ks, [copy_errors[k] for k in ks], "s--", label="nothing moves")
    ax.set_xlabel("steps ahead (whole chunks)")
    ax.set_ylabel("pixel MSE ([0, 1] intensities)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _config(settings: dict, task: str) -> ImageModelConfig:
    known = {f.name for f in fields(ImageModelConfig)}
    return ImageModelConfig(**{k: v for k, v in settings.items() if k in known}, task=task)


def train_image_job(task: TaskConfig, settings: dict, progress: bool = True) -> dict:
    """``python -m world_models train world_model=image store=PATH``: train, then report."""
    cfg = _config(settings, task.name)
    out = Path(settings["out"])
    model, summary = train_image_model(settings["store"], cfg, out, progress)
    data = load_frame_data(settings["store"], model.cfg)
    report = image_fidelity(model, data, np.asarray(summary["held_out_episodes"]), out / "fidelity")
    (out / "fidelity.json").write_text(json.dumps(report, indent=2))
    return {**summary, "held_out_episodes": len(summary["held_out_episodes"]), "fidelity": report}


def image_bench(task_name: str, overrides: list[str], out: Path, base_path: str | None) -> dict:
    """Record a camera store (experts + base rollouts), train within the budget, report."""
    from robot_rl.policies import load_policy
    from world_models.__main__ import load_settings

    task, settings = load_settings([f"task={task_name}", "world_model=image", *overrides])
    task_cfg = task.build()
    cfg = _config(settings, task.name)
    start = time.perf_counter()
    store = out / "frames.zarr"
    print(f"[bench world_model] recording {cfg.camera} frames -> {store}", flush=True)
    policy = load_policy(base_path) if base_path else None
    recorded = collect_image_store(
        task_cfg,
        store,
        cfg.camera,
        cfg.image_size,
        int(settings.get("expert_episodes", 150)),
        policy,
        int(settings.get("policy_episodes", 150)),
    )
    record_wall = time.perf_counter() - start
    print(f"[bench world_model] image world model, {cfg.max_minutes} min budget", flush=True)
    model, summary = train_image_model(store, cfg, out, progress=False)
    data = load_frame_data(store, model.cfg)
    report = image_fidelity(model, data, np.asarray(summary["held_out_episodes"]), out / "fidelity")
    total = time.perf_counter() - start
    return {
        "config": asdict(model.cfg),
        "recorded": recorded,
        "record_wall_s": record_wall,
        "train_steps": summary["steps"],
        "train_wall_s": summary["train_wall_s"],
        "total_wall_s": total,
        "within_30_min": total <= 1800.0,
        "kstep_error": report["kstep_mse"],
        **{k: v for k, v in report.items() if k != "kstep_mse"},
        "model": str(out / "model"),
    }
