"""Small datasets written by each format's own tools, for tests and the conversion benchmark.

Each writer returns the per-episode source arrays it wrote, so a test can check a conversion
against what the format's tool was given, not only against our own reading of the file:

- ``write_lerobot_sample``: ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode``;
- ``write_robomimic_sample``: h5py, following robomimic's documented layout (float64 low-dim
  observations, uint8 ``<camera>_image``, ``env_args``, ``mask/``);
- ``write_replay_buffer_sample``: a zarr v2 group as diffusion_policy's ``ReplayBuffer``
  writes it (float32 0..255 frames, ``meta/episode_ends``);
- ``write_store_sample``: ``EpisodeStore.append_episode``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.store import EpisodeStore

Episodes = list[dict[str, np.ndarray]]
LENGTHS = (5, 3, 7)


def write_store_sample(
    path: Path, lengths: Sequence[int] = LENGTHS, image: bool = True, seed: int = 0
) -> Episodes:
    """A store with state, action, reward, flags, a timestamp and (optionally) a camera."""
    rng = np.random.default_rng(seed)
    episodes = []
    with EpisodeStore.create(path, task="push", fps=10.0, source="sample", robot="sim") as store:
        for i, length in enumerate(lengths):
            episode = {
                K.STATE: rng.normal(size=(length, 4)).astype(np.float32),
                K.ACTION: rng.uniform(-1, 1, size=(length, 2)).astype(np.float32),
                K.REWARD: rng.normal(size=length).astype(np.float32),
                K.IS_SUCCESS: np.arange(length) == length - 1
                if i % 2 == 0
                else np.zeros(length, bool),
                K.TERMINATED: np.arange(length) == length - 1,
                "timestamp": (np.arange(length) / 10.0).astype(np.float32),
            }
            if image:
                episode[K.image_key("front")] = rng.integers(0, 256, (length, 6, 5, 3), np.uint8)
            store.append_episode(episode, success=i % 2 == 0)
            episodes.append(episode)
    return episodes


def write_robomimic_sample(
    path: Path,
    lengths: Sequence[int] = LENGTHS,
    image: bool = True,
    seed: int = 0,
    nan_demo: int | None = None,
    short_obs_demo: int | None = None,
) -> Episodes:
    """A robomimic HDF5 file written with h5py. ``nan_demo`` puts a NaN in that demo's actions;
    ``short_obs_demo`` drops the last row of that demo's ``obs/object`` (corrupt inputs)."""
    import h5py

    rng = np.random.default_rng(seed)
    episodes = []
    env_args = {
        "env_name": "Lift",
        "type": 1,
        "env_kwargs": {"control_freq": 20, "robots": ["Panda"]},
    }
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i, length in enumerate(lengths):
            obs = {
                "robot0_eef_pos": rng.normal(size=(length, 3)),
                "robot0_gripper_qpos": rng.normal(size=(length, 2)),
                "object": rng.normal(size=(length, 10)),
            }
            if image:
                obs["agentview_image"] = rng.integers(0, 256, (length, 8, 8, 3), np.uint8)
            demo = {
                "actions": rng.uniform(-1, 1, size=(length, 7)),
                "rewards": (np.arange(length) == length - 1).astype(np.float64),
                "dones": (np.arange(length) == length - 1).astype(np.int64),
                "states": rng.normal(size=(length, 12)),
            }
            if i == nan_demo:
                demo["actions"][length // 2, 0] = np.nan
            group = data.create_group(f"demo_{i}")
            group.attrs["num_samples"] = length
            for key, value in demo.items():
                group.create_dataset(key, data=value)
            for key, value in obs.items():
                cut = value[:-1] if i == short_obs_demo and key == "object" else value
                group.create_dataset(f"obs/{key}", data=cut)
                group.create_dataset(f"next_obs/{key}", data=np.concatenate([cut[1:], cut[-1:]]))
            episodes.append({**demo, **{f"obs/{k}": v for k, v in obs.items()}})
        data.attrs["total"] = int(sum(lengths))
        data.attrs["env_args"] = json.dumps(env_args)
        names = [f"demo_{i}" for i in range(len(lengths))]
        f.create_dataset("mask/train", data=np.array(names[:-1], dtype="S"))
        f.create_dataset("mask/valid", data=np.array(names[-1:], dtype="S"))
    return episodes


LEROBOT_FEATURES = {
    "observation.state": {"dtype": "float32", "shape": (6,), "names": None},
    "observation.environment_state": {"dtype": "float32", "shape": (4,), "names": None},
    "action": {"dtype": "float32", "shape": (3,), "names": None},
    "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    "next.success": {"dtype": "bool", "shape": (1,), "names": None},
}
LEROBOT_IMAGE = {"dtype": "image", "shape": (8, 8, 3), "names": ["height", "width", "channels"]}


def write_lerobot_sample(
    path: Path,
    lengths: Sequence[int] = LENGTHS,
    image: bool = True,
    seed: int = 0,
    nan_episode: int | None = None,
) -> Episodes:
    """A LeRobot v3 dataset made by ``LeRobotDataset.create`` and ``add_frame`` (images as PNG).
    ``nan_episode`` puts a NaN in that episode's actions (a corrupt input)."""
    import datasets
    from robot_rl.lerobot_compat import import_lerobot_datasets

    lerobot = import_lerobot_datasets()
    datasets.disable_progress_bars()
    features = dict(LEROBOT_FEATURES)
    if image:
        features["observation.images.top"] = LEROBOT_IMAGE
    dataset = lerobot.LeRobotDataset.create(
        "sample/lerobot", fps=30, features=features, root=path, robot_type="so100",
        use_videos=False, video_backend="pyav",
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    episodes = []
    for i, length in enumerate(lengths):
        last = np.arange(length) == length - 1
        episode = {
            "observation.state": rng.normal(size=(length, 6)).astype(np.float32),
            "observation.environment_state": rng.normal(size=(length, 4)).astype(np.float32),
            "action": rng.normal(size=(length, 3)).astype(np.float32),
            "next.reward": last.astype(np.float32),
            "next.done": last,
            "next.success": last & (i % 2 == 0),
        }
        if i == nan_episode:
            episode["action"][length // 2, 1] = np.nan
        if image:
            episode["observation.images.top"] = rng.integers(0, 256, (length, 8, 8, 3), np.uint8)
        for t in range(length):
            frame = {k: v[t] if v.ndim > 1 else v[t : t + 1] for k, v in episode.items()}
            dataset.add_frame({**frame, "task": "pick up the cube"})
        with warnings.catch_warnings():  # LeRobot's statistics of bool features
            warnings.filterwarnings("ignore", "Converting input from bool", RuntimeWarning)
            dataset.save_episode()
        episodes.append(episode)
    dataset.finalize()
    return episodes


def write_replay_buffer_sample(
    path: Path, lengths: Sequence[int] = LENGTHS, seed: int = 0
) -> Episodes:
    """A diffusion_policy replay buffer: zarr v2, float32 0..255 frames, ``meta/episode_ends``."""
    import zarr

    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    arrays = {
        "state": rng.normal(size=(n, 5)).astype(np.float32),
        "action": rng.uniform(0, 512, size=(n, 2)).astype(np.float32),
        "img": rng.integers(0, 256, (n, 16, 16, 3)).astype(np.float32),
        "keypoint": rng.normal(size=(n, 9, 2)).astype(np.float32),
    }
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for key, value in arrays.items():
        root.create_array(f"data/{key}", data=value, chunks=(100, *value.shape[1:]))
    root.create_array("meta/episode_ends", data=np.cumsum(lengths).astype(np.int64))
    ends = np.cumsum(lengths)
    return [
        {k: v[e - t : e] for k, v in arrays.items()} for t, e in zip(lengths, ends, strict=True)
    ]


def store_differences(a: Path, b: Path) -> list[str]:
    """Where two stores differ (keys, dtypes, frames, episode ends, success, task/fps/robot);
    empty when every array is bit-identical."""
    first, second = EpisodeStore.open(a), EpisodeStore.open(b)
    found = []
    if first.keys != second.keys:
        return [f"keys {first.keys} != {second.keys}"]
    for name in ("episode_ends", "episode_success"):
        if not np.array_equal(getattr(first, name), getattr(second, name)):
            found.append(name)
    for key in first.keys:
        x, y = first.read(key), second.read(key)
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            found.append(f"{key}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
    for name in ("task", "fps", "robot"):
        if first.meta[name] != second.meta[name]:
            found.append(f"meta {name}: {first.meta[name]!r} != {second.meta[name]!r}")
    return found
