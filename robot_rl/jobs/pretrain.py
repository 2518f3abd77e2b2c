"""``robot-rl pretrain``: behaviour cloning from an episode store into a checkpoint folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.config import PretrainJob
from robot_rl.core import keys
from robot_rl.data import EpisodeStore, WindowSampler
from robot_rl.eval.media import plot_curve
from robot_rl.policies import Normalizer, policy_class, save_policy
from robot_rl.train.pretrain import pretrain

META_FIELDS = ("kind", "policy_class")


def build_policy(policy_cfg: dict[str, Any], store: EpisodeStore, seed: int = 0):
    """A fresh policy whose observation keys, shapes and normalisation come from the store.

    ``policy_cfg``: the policy group entry (``kind``, ``policy_class`` and config fields).
    Observation keys default to every ``state``/``image.*`` key the store holds."""
    cls = policy_class(policy_cfg.get("policy_class", ""))
    fields = {k: v for k, v in policy_cfg.items() if k not in META_FIELDS}
    obs_keys = fields.pop("obs_keys", None) or [
        k for k in store.keys if k == keys.STATE or keys.is_image_key(k)
    ]
    missing = [k for k in [*obs_keys, keys.ACTION] if k not in store.keys]
    if missing:
        raise KeyError(f"store {store.path} has no {missing}; it holds {list(store.keys)}")
    shapes = {k: tuple(store.schema[k].shape) for k in obs_keys}
    config = cls.config_class.from_dict(
        {
            **fields,
            "obs_shapes": shapes,
            "action_dim": int(store.schema[keys.ACTION].shape[0]),
            "seed": seed,
        }
    )
    stats = {k: store.stats(k) for k in config.norm_modes}
    return cls(config, Normalizer.from_stats(stats, config.norm_modes))


def pretrain_job(job: PretrainJob, plot_path: str | Path | None = None) -> dict:
    """Trains a policy on ``job.store`` and saves it to ``job.out``; returns a summary."""
    store = EpisodeStore.open(job.store)
    try:
        if store.n_episodes == 0:
            raise ValueError(f"store {job.store} has no episodes; run `robot-rl collect` first")
        policy = build_policy(job.policy, store, job.seed)
        sampler = WindowSampler(
            store, list(policy.config.obs_shapes), policy.n_obs_steps, policy.horizon
        )
    finally:
        store.close()
    history = pretrain(
        policy,
        sampler.sample,
        steps=job.steps,
        batch_size=job.batch_size,
        lr=job.lr,
        weight_decay=job.weight_decay,
        log_dir=Path(job.out).with_name(Path(job.out).name + "_tb"),
        progress=job.progress,
        seed=job.seed,
    )
    path = save_policy(policy, job.out, overwrite=True)
    if plot_path:
        losses = np.asarray(history["losses"])
        plot_curve(
            np.arange(1, len(losses) + 1),
            {"loss": _smooth(losses)},
            plot_path,
            "gradient step",
            "BC loss",
            f"pretraining {job.policy.get('kind')}",
        )
    return {
        "checkpoint": str(path),
        "steps": job.steps,
        "wall_s": history["wall_s"],
        "steps_per_s": history["steps_per_s"],
        "final_loss": float(np.mean(history["losses"][-50:])),
    }


def _smooth(x: np.ndarray, width: int = 50) -> np.ndarray:
    width = max(1, min(width, len(x)))
    return np.convolve(x, np.ones(width) / width, mode="valid").tolist() + [float(x[-1])] * (
        width - 1
    )
