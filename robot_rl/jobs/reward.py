"""``robot-rl reward COMMAND [key=value ...]``: train, adapt, evaluate and apply reward models.

    robot-rl reward train   store=S [out=DIR] [classifier.steps=800 ...]   success classifier
    robot-rl reward adapt   store=S [out=DIR] [clip.steps=600 ...]         domain-adapted CLIP
    robot-rl reward vlm     [out=DIR] [vlm.pretrained=/path/weights.bin ...] zero-shot VLM-RM
    robot-rl reward eval    store=S 'models=[DIR, DIR]' [out=DIR]          AUROC, Spearman, PNG
    robot-rl reward relabel store=S model=DIR out=NEW.zarr                 model rewards -> store

Model settings start from ``configs/reward/{classifier,clip_adapt,vlm_rm}.yaml``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from robot_rl import config
from robot_rl.core import keys
from robot_rl.data.store import EpisodeStore

COMMANDS = ("train", "adapt", "vlm", "eval", "relabel")
DEFAULT_OUT = {
    "train": "runs/reward_classifier",
    "adapt": "runs/reward_clip",
    "vlm": "runs/reward_vlm",
    "eval": "reports/reward_eval",
}


@dataclass
class RewardJob:
    """Settings of ``robot-rl reward``."""

    command: str = ""
    """train | adapt | vlm | eval | relabel (the first positional argument)"""
    store: str = ""
    """episode store with camera frames (and success labels for train/adapt/eval)"""
    out: str = ""
    """checkpoint folder (train, adapt, vlm), report folder (eval) or new store (relabel)"""
    models: list[str] = field(default_factory=list)
    """eval: reward model checkpoint folders"""
    model: str = ""
    """relabel: the reward model checkpoint folder"""
    classifier: dict[str, Any] = field(default_factory=dict)
    """train: overrides of configs/reward/classifier.yaml"""
    clip: dict[str, Any] = field(default_factory=dict)
    """adapt: overrides of configs/reward/clip_adapt.yaml"""
    vlm: dict[str, Any] = field(default_factory=dict)
    """vlm: overrides of configs/reward/vlm_rm.yaml"""
    label: str = "step"
    """success labels of frames: per-step is_success ('step') or by episode ('episode_end')"""
    test_fraction: float = 0.25
    """train: episodes held out for the precision/recall report"""
    reward_key: str = "reward"
    """relabel: the key the model's rewards go to (the old one moves to task_reward)"""
    overwrite: bool = False
    """relabel: replace an existing store at out"""
    progress: bool = True
    """progress bars"""

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(
                f"reward {self.command or '(no command)'}: use one of {list(COMMANDS)}, e.g. "
                "robot-rl reward train store=datasets/push_cam.zarr"
            )
        if self.command != "vlm" and not self.store:
            raise ValueError(f"reward {self.command} needs store=PATH (an episode store)")
        if self.command == "eval" and not self.models:
            raise ValueError("reward eval needs models=[DIR, ...] (reward model checkpoints)")
        if self.command == "relabel" and (not self.model or not self.out):
            raise ValueError("reward relabel needs model=DIR and out=NEW_STORE.zarr")


def reward_job(overrides: list[str]) -> dict:
    job: RewardJob = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(RewardJob), OmegaConf.from_dotlist(overrides))
    )
    out = Path(job.out or DEFAULT_OUT.get(job.command, ""))
    return {"train": _train, "adapt": _adapt, "vlm": _vlm, "eval": _eval, "relabel": _relabel}[
        job.command
    ](job, out)


def reward_settings(name: str, overrides: dict, schema):
    """configs/reward/<name>.yaml merged with ``overrides`` into the dataclass ``schema``."""
    path = config.config_dir() / "reward" / f"{name}.yaml"
    base = OmegaConf.load(path)
    base.pop("kind", None)
    return OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(schema), base, OmegaConf.create(overrides))
    )


def _train(job: RewardJob, out: Path) -> dict:
    from robot_rl.rewards.classifier import ClassifierConfig, train_classifier
    from robot_rl.rewards.frames import load_labelled_frames
    from robot_rl.rewards.metrics import auroc, precision_recall

    cfg = reward_settings("classifier", job.classifier, ClassifierConfig)
    frames = load_labelled_frames(job.store, cfg.image_key, cfg.with_state, job.label)
    train, test = frames.split_episodes(job.test_fraction, seed=cfg.seed + 1)
    with _tensorboard(out) as writer:
        model = train_classifier(train, cfg, progress=job.progress, writer=writer)
    obs = {cfg.image_key: test.images}
    if cfg.with_state:
        obs[keys.STATE] = test.states
    p = model.probability(obs)
    model.report["held_out"] = {
        "episodes": int(len(np.unique(test.episode))),
        "auroc": auroc(p, test.labels),
        **precision_recall(p, test.labels, model.threshold),
    }
    model.save(out)
    return {"checkpoint": str(out), "threshold": model.threshold, **model.report}


def _adapt(job: RewardJob, out: Path) -> dict:
    from robot_rl.rewards.adapt import AdaptConfig, adapt_clip

    cfg = reward_settings("clip_adapt", job.clip, AdaptConfig)
    with _tensorboard(out) as writer:
        _, report = adapt_clip(job.store, cfg, out, progress=job.progress, writer=writer)
    return report


@contextmanager
def _tensorboard(out: Path):
    """TensorBoard scalars beside the checkpoint folder (``<out>_tb``): the folder itself is
    replaced whole when the checkpoint is written."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out.with_name(out.name + "_tb")))
    try:
        yield writer
    finally:
        writer.close()


def _vlm(job: RewardJob, out: Path) -> dict:
    from robot_rl.rewards.clip import ClipConfig, ClipReward

    reward = ClipReward(reward_settings("vlm_rm", job.vlm, ClipConfig))
    reward.save(out, with_weights=False)
    return {"checkpoint": str(out), "model": reward.cfg.model, "pretrained": reward.cfg.pretrained}


def _eval(job: RewardJob, out: Path) -> dict:
    from robot_rl.rewards.checkpoint import load_reward_model
    from robot_rl.rewards.frames import load_labelled_frames
    from robot_rl.rewards.report import plot_reward_curves, reward_figures, score_frames

    figures, curves = {}, {}
    for path in job.models:
        model = load_reward_model(path)
        image_key = next(k for k in model.required_keys if keys.is_image_key(k))
        with_state = keys.STATE in model.required_keys
        frames = load_labelled_frames(job.store, image_key, with_state, job.label)
        name = Path(path).name
        curves[name] = score_frames(model, frames, image_key, progress=job.progress)
        figures[name] = {"checkpoint": str(path), **reward_figures(curves[name], frames)}
    out.mkdir(parents=True, exist_ok=True)
    png = plot_reward_curves(curves, frames, out / "reward_curves.png")
    summary = {"store": job.store, "models": figures, "plot": str(png)}
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary


def relabel_rewards(model, episode: dict[str, np.ndarray]) -> np.ndarray:
    """Model rewards ``[T]`` for one stored episode: ``reward[t]`` belongs to the frame reached
    by action t, which is frame t + 1; the last step's frame is never stored, so the last
    reward is the model's value on the last stored frame."""
    obs = {k: episode[k] for k in model.required_keys}
    values = np.asarray(model(obs), dtype=np.float32)
    return np.concatenate([values[1:], values[-1:]])


def _relabel(job: RewardJob, out: Path) -> dict:
    from robot_rl.rewards.checkpoint import load_reward_model

    model = load_reward_model(job.model)
    source = EpisodeStore.open(job.store)
    if out.resolve() == source.path.resolve():
        raise ValueError(f"relabel writes a new store; out={out} is the source store")
    if out.exists() and not job.overwrite:
        raise FileExistsError(f"{out} exists; choose another out= or pass overwrite=true")
    tmp = out.with_name(f".{out.name}.relabel-{uuid.uuid4().hex[:8]}")
    meta = source.meta
    extra = {**meta.get("extra", {}), "relabelled": {"from": str(job.store), "model": job.model}}
    dest = EpisodeStore.create(
        tmp,
        task=meta["task"],
        fps=meta["fps"],
        source=meta["source"],
        robot=meta["robot"],
        extra=extra,
    )
    try:
        for i in tqdm(range(source.n_episodes), desc="relabel", disable=not job.progress):
            episode = source.get_episode(i)
            rewards = relabel_rewards(model, episode)
            if job.reward_key in episode:
                episode["task_" + job.reward_key] = episode[job.reward_key]
            episode[job.reward_key] = rewards
            dest.append_episode(episode, success=bool(source.episode_success[i]))
        dest.close()
        if out.exists():
            if not (out / "zarr.json").is_file():
                raise FileExistsError(f"{out} is not an episode store; refusing to replace it")
            shutil.rmtree(out)
        tmp.rename(out)  # the new store appears whole or not at all
    finally:
        dest.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "store": str(out),
        "episodes": source.n_episodes,
        "frames": source.n_frames,
        "model": job.model,
        "reward_key": job.reward_key,
    }
