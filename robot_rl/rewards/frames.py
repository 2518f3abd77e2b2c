"""Frames for reward models: checks of image batches, and labelled frames read from a store.

Shapes (B batch, To history, S pixels per side, D state dims)::

    obs["image.<cam>"]  uint8 [B, S, S, 3] or [B, To, S, S, 3]  -> the latest frame [B, S, S, 3]
    obs["state"]        float32 [B, D] or [B, To, D]              -> the latest state [B, D]

Store frame t is the observation *before* action t, and ``is_success[t]`` is the flag *after*
it, so the success label of frame t is ``is_success[t - 1]`` (frame 0: not successful)::

    frame        o0     o1     o2    ...   o(T-1)    [o(T) is never stored]
    is_success   s0     s1     s2          s(T-1)
    label        F      s0     s1          s(T-2)

An episode that terminates on success therefore stores no successful frame; record labelled
data with ``terminate_on_success=false`` (the box stays in the zone) or label by episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rl.core import keys
from robot_rl.core.policy import Observation
from robot_rl.data.store import EpisodeStore

LABELS = ("step", "episode_end")


def check_images(images: np.ndarray, key: str, size: int | None) -> np.ndarray:
    """A batch ``uint8 [B, S, S, 3]`` (or ``[B, To, S, S, 3]``, latest frame kept); errors name
    the key, the bad dtype or shape, and the expected one."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(
            f"{key}: images must be uint8 [B, H, W, 3] in 0..255, got dtype {images.dtype}; "
            "convert float images with (x * 255).round().astype(np.uint8)"
        )
    if images.ndim == 5:
        images = images[:, -1]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{key}: images must be [B, H, W, 3] (RGB), got shape {images.shape}")
    if size is not None and images.shape[1:3] != (size, size):
        raise ValueError(
            f"{key}: images are {images.shape[1]}x{images.shape[2]}, this reward model reads "
            f"{size}x{size}; render the camera at image_size={size} or retrain on your size"
        )
    return images


def latest_state(obs: Observation) -> np.ndarray:
    """``state`` ``[B, D]`` (latest of a history ``[B, To, D]``) as float32."""
    state = np.asarray(obs[keys.STATE], dtype=np.float32)
    return state[:, -1] if state.ndim == 3 else state


@dataclass
class LabelledFrames:
    """Frames of whole episodes with per-frame labels (N frames, E episodes)."""

    images: np.ndarray
    """uint8 [N, S, S, 3]"""
    states: np.ndarray | None
    """float32 [N, D], or None when not loaded"""
    labels: np.ndarray
    """bool [N]: the frame shows success"""
    episode: np.ndarray
    """int64 [N]: store index of each frame's episode"""
    progress: np.ndarray
    """float32 [N]: t / (T - 1) within the episode, the task's progress in time"""
    episode_success: np.ndarray
    """bool [N]: the frame's episode succeeded"""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> LabelledFrames:
        states = None if self.states is None else self.states[mask]
        return LabelledFrames(
            self.images[mask],
            states,
            self.labels[mask],
            self.episode[mask],
            self.progress[mask],
            self.episode_success[mask],
        )

    def split_episodes(
        self, fraction: float, seed: int = 0
    ) -> tuple[LabelledFrames, LabelledFrames]:
        """Two sets of whole episodes, the second holding about ``fraction`` of them (held
        out: no episode contributes frames to both)."""
        episodes = np.unique(self.episode)
        held = np.random.default_rng(seed).permutation(episodes)[
            : max(1, round(fraction * len(episodes)))
        ]
        mask = np.isin(self.episode, held)
        if mask.all():
            raise ValueError(f"{len(episodes)} episode(s) cannot be split; record more episodes")
        return self.subset(~mask), self.subset(mask)


def load_labelled_frames(
    store: str | Path | EpisodeStore,
    image_key: str,
    with_state: bool = False,
    label: str = "step",
    positive_frames: int = 5,
    episodes: np.ndarray | None = None,
) -> LabelledFrames:
    """Frames of ``image_key`` and their success labels from an episode store.

    ``label="step"`` uses the per-step ``is_success`` flags (see the module docstring);
    ``label="episode_end"`` marks the last ``positive_frames`` frames of every successful
    episode (the stored episode success, e.g. an operator's label on a real robot)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    handle = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    where = str(handle.path)
    if image_key not in handle.keys:
        cams = [k for k in handle.keys if keys.is_image_key(k)]
        raise KeyError(
            f"{where} has no {image_key!r} (camera keys: {cams}); record it with "
            f"robot-rl collect cameras=[{keys.camera_name(image_key)}] or pick another camera"
        )
    if label == "step" and keys.IS_SUCCESS not in handle.keys:
        raise KeyError(f"{where} has no per-step is_success; use label=episode_end")
    selected = np.arange(handle.n_episodes) if episodes is None else np.asarray(episodes)
    lengths = handle.episode_lengths[selected]
    images = handle.read(image_key, selected)
    states = handle.read(keys.STATE, selected).astype(np.float32) if with_state else None
    episode = np.repeat(selected, lengths).astype(np.int64)
    t = np.concatenate([np.arange(n) for n in lengths])
    progress = (t / np.maximum(np.repeat(lengths, lengths) - 1, 1)).astype(np.float32)
    ep_success = np.repeat(handle.episode_success[selected], lengths)
    if label == "step":
        flags = handle.read(keys.IS_SUCCESS, selected).astype(bool)
        labels = np.zeros_like(flags)
        labels[1:] = flags[:-1]
        labels[t == 0] = False  # the previous flag belongs to the previous episode
    else:
        from_end = np.repeat(lengths, lengths) - t
        labels = ep_success & (from_end <= positive_frames)
    if not labels.any() or labels.all():
        kind = "successful" if not labels.any() else "unsuccessful"
        raise ValueError(
            f"{where}: no frame of {image_key!r} is labelled {kind} (label={label}); a classifier "
            "needs both. Episodes that end on success store no successful frame: record with "
            "terminate_on_success=false, or use label=episode_end"
        )
    return LabelledFrames(images, states, labels, episode, progress, ep_success)
