"""robomimic / robosuite HDF5 files, read and written with h5py in robomimic's layout::

    data/                      attrs: total (frames), env_args (JSON: env_name, type, env_kwargs)
      demo_0/                  attrs: num_samples (T)
        obs/<key>              [T, ...]   low-dim keys and <camera>_image uint8 [T, H, W, 3]
        next_obs/<key>         [T, ...]   (optional; not read)
        actions                [T, A]
        rewards, dones         [T]
        states                 [T, S]     simulator states (optional)
      demo_1/ ...
    mask/<filter_key>          names of the demos in a split (e.g. train, valid)

robot_rl adds what the layout has no place for, and robomimic ignores: a demo's ``success``
attribute, per-step keys without a robomimic name under ``demo_N/robot_rl/``, and a
``robot_rl`` JSON attribute on ``data`` (the store's keys, task and fps) so that importing an
export gives back exactly the store it came from. Exports are written to a temporary file and
renamed into place when complete.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.convert.formats import (
    ROBOT_RL_RECORD,
    Destination,
    EpisodeReader,
    EpisodeWriter,
    SourceInfo,
    read_record,
)
from robot_rl.data.convert.keymap import SourceKey
from robot_rl.data.convert.options import ConvertError, ConvertOptions

GYM_ENV_TYPE = 2
"""robomimic's EnvType for gym environments (robosuite is 1)."""
_EXTRA_GROUP = "robot_rl"
_STORE_TO_H5 = {
    K.ACTION: "actions",
    K.REWARD: "rewards",
    K.TERMINATED: "dones",
    "sim_state": "states",
}
_VALID_EVERY = 10  # every 10th demo goes to mask/valid (robomimic's default split is 10%)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # a core dependency; only a broken install gets here
        raise ImportError("robomimic HDF5 needs h5py: pip install h5py") from err
    return h5py


def _demo_order(name: str) -> tuple[int, str]:
    match = re.fullmatch(r"demo_(\d+)", name)
    return (int(match.group(1)) if match else 1 << 62, name)


class RobomimicReader(EpisodeReader):
    def __init__(self, path: Path, options: ConvertOptions) -> None:
        h5py = _h5py()
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise ConvertError(
                f"{path}: cannot be opened as HDF5 ({err}); the file is truncated or not HDF5: "
                "restore it from a complete copy"
            ) from err
        try:
            self.info = self._describe(path, options)
        except BaseException:
            self._file.close()
            raise

    def _describe(self, path: Path, options: ConvertOptions) -> SourceInfo:
        data = self._file.get("data")
        if data is None or not hasattr(data, "keys"):
            raise ConvertError(
                f"{path}: no 'data' group, so not robomimic's layout "
                "(data/demo_N/{obs, actions, rewards, dones}); pass from_format=... if it is "
                "another format"
            )
        self._data = data
        self._demos = self._select(path, sorted(data.keys(), key=_demo_order), options.filter_key)
        lengths = np.array([self._length(path, name) for name in self._demos], dtype=np.int64)
        env_args = read_record(data.attrs.get("env_args")) or {}
        env_kwargs = env_args.get("env_kwargs") or {}
        robots = env_kwargs.get("robots")
        return SourceInfo(
            format="robomimic",
            path=path,
            lengths=lengths,
            keys=self._keys(path, self._demos[0]),
            files=[path],
            fps=env_kwargs.get("control_freq"),
            task=env_args.get("env_name"),
            robot="+".join(robots) if isinstance(robots, list) else robots,
            attrs={"env_args": env_args, "filter_key": options.filter_key},
            record=read_record(data.attrs.get(ROBOT_RL_RECORD)),
        )

    def _select(self, path: Path, demos: list[str], filter_key: str | None) -> list[str]:
        if filter_key is not None:
            masks = self._file.get("mask")
            if masks is None or filter_key not in masks:
                known = sorted(masks.keys()) if masks is not None else []
                raise ConvertError(f"{path}: no mask/{filter_key}; filter keys here: {known}")
            wanted = {n.decode() if isinstance(n, bytes) else str(n) for n in masks[filter_key]}
            missing = sorted(wanted - set(demos))
            if missing:
                raise ConvertError(
                    f"{path}: mask/{filter_key} lists demos that data/ lacks: {missing[:5]}; "
                    "the file is damaged or was cut: restore it"
                )
            demos = [name for name in demos if name in wanted]
        if not demos:
            raise ConvertError(f"{path}: data/ holds no demos; nothing to convert")
        return demos

    def _length(self, path: Path, name: str) -> int:
        try:
            group = self._data[name]
            length = int(group["actions"].shape[0])
            declared = group.attrs.get("num_samples")
        except (KeyError, OSError) as err:
            raise ConvertError(
                f"{path}: data/{name} cannot be read or has no 'actions' ({err}); the file is "
                "damaged or truncated: restore it from a complete copy"
            ) from err
        if declared is not None and int(declared) != length:
            raise ConvertError(
                f"{path}: data/{name} declares num_samples={int(declared)} but 'actions' has "
                f"{length} rows; the demo is inconsistent: fix or drop it"
            )
        return length

    def _keys(self, path: Path, name: str) -> dict[str, SourceKey]:
        group = self._data[name]
        found: dict[str, SourceKey] = {}
        for prefix in ("", "obs/", f"{_EXTRA_GROUP}/"):
            if prefix and prefix[:-1] not in group:
                continue
            for key, value in (group[prefix[:-1]] if prefix else group).items():
                if hasattr(value, "shape"):  # a dataset, not a group
                    shape = tuple(int(s) for s in value.shape[1:])
                    image = len(shape) == 3 and shape[-1] == 3 and value.dtype == np.uint8
                    found[prefix + key] = SourceKey(str(value.dtype), shape, image)
        return found

    def read(self, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        name = self._demos[index]
        group = self._data[name]
        missing = [key for key in keys if key not in group]
        if missing:
            raise ConvertError(
                f"{self.info.path}: data/{name} has no {missing}; every demo must hold the keys "
                "of the first one: fix or drop this demo"
            )
        return {key: group[key][()] for key in keys}

    def success(self, index: int) -> bool | None:
        flag = self._data[self._demos[index]].attrs.get("success")
        return None if flag is None else bool(flag)

    def name(self, index: int) -> str:
        return f"data/{self._demos[index]}"

    def close(self) -> None:
        self._file.close()


class RobomimicWriter(EpisodeWriter):
    def __init__(self, dest: Destination, options: ConvertOptions) -> None:
        if dest.path.exists() and not options.overwrite:
            raise ConvertError(
                f"{dest.path}: exists; choose a new file or pass overwrite=true to replace it"
            )
        self._dest = dest
        self._next_obs = options.next_obs
        self._tmp = dest.path.with_name(f".{dest.path.name}.writing-{uuid.uuid4().hex[:8]}")
        dest.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _h5py().File(self._tmp, "w")
        self._data = self._file.create_group("data")
        self._lengths: list[int] = []
        self._store_keys: list[str] = []
        self._state_split = _state_split(dest.upstream)

    def append(self, episode: Mapping[str, np.ndarray], success: bool) -> None:
        group = self._data.create_group(f"demo_{len(self._lengths)}")
        length = len(next(iter(episode.values())))
        group.attrs["num_samples"] = length
        group.attrs["success"] = bool(success)
        obs = self._observations(episode)
        for key, value in obs.items():
            _dataset(group, f"obs/{key}", value)
            if self._next_obs:
                _dataset(group, f"next_obs/{key}", np.concatenate([value[1:], value[-1:]]))
        for key, value in episode.items():
            if key in _STORE_TO_H5:
                _dataset(group, _STORE_TO_H5[key], value)
            elif key != K.STATE and not K.is_image_key(key):
                _dataset(group, f"{_EXTRA_GROUP}/{key}", value)
        # robomimic's loaders expect rewards and dones in every demo
        if K.REWARD not in episode:
            group["rewards"] = np.zeros(length, np.float32)
        if K.TERMINATED not in episode:
            group["dones"] = np.zeros(length, np.int64)
        self._lengths.append(length)
        self._store_keys = sorted(episode)

    def _observations(self, episode: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if K.STATE in episode:
            state = episode[K.STATE]
            if self._state_split and sum(w for _, w in self._state_split) == state.shape[1]:
                start = 0
                for name, width in self._state_split:
                    obs[name] = state[:, start : start + width]
                    start += width
            else:
                obs[K.STATE] = state
        for key, value in episode.items():
            if K.is_image_key(key):
                obs[f"{K.camera_name(key)}_image"] = value
        return obs

    def finish(self) -> None:
        self._data.attrs["total"] = int(sum(self._lengths))
        self._data.attrs["env_args"] = json.dumps(self._env_args())
        record = self._dest.record(self._store_keys)
        self._data.attrs[ROBOT_RL_RECORD] = json.dumps(record)
        names = [f"demo_{i}" for i in range(len(self._lengths))]
        valid = [n for i, n in enumerate(names) if i % _VALID_EVERY == _VALID_EVERY - 1]
        train = [n for n in names if n not in set(valid)]
        for split, members in (("train", train), ("valid", valid)):
            self._file.create_dataset(f"mask/{split}", data=np.array(members, dtype="S"))
        self._file.close()
        if self._dest.path.exists():
            self._dest.path.unlink() if self._dest.path.is_file() else shutil.rmtree(
                self._dest.path
            )
        self._tmp.rename(self._dest.path)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def _env_args(self) -> dict[str, Any]:
        upstream = self._dest.upstream
        if upstream.get("format") == "robomimic" and upstream.get("attrs", {}).get("env_args"):
            return upstream["attrs"]["env_args"]
        return {"env_name": self._dest.task, "type": GYM_ENV_TYPE, "env_kwargs": {}}


def _state_split(upstream: Mapping[str, Any]) -> list[tuple[str, int]]:
    """A store converted from robomimic records which obs keys formed its state: split it back."""
    parts = (upstream.get("keys") or {}).get("state") or []
    if upstream.get("format") != "robomimic" or not parts:
        return []
    if not all(str(key).startswith("obs/") for key, _ in parts):
        return []
    return [(str(key)[len("obs/") :], int(width)) for key, width in parts]


def _dataset(group: Any, name: str, value: np.ndarray) -> None:
    if value.dtype == np.bool_:
        value = value.astype(np.int64) if name == "dones" else value
    if value.ndim == 4 and value.dtype == np.uint8:  # camera frames: robomimic's --compress
        group.create_dataset(name, data=value, compression="gzip", compression_opts=4)
    else:
        group.create_dataset(name, data=value)
