"""Readers and writers of episodes, one pair per format, and the format of a path.

A reader yields one source episode at a time as ``{source key: [T, ...]}`` (so memory is
bounded by the largest episode) and describes the source in a :class:`SourceInfo`. A writer
takes store-keyed episodes (see ``keymap.py``) one at a time. Readers check a source's
structure when they open it (missing files, episode index gaps, lengths that disagree), so a
broken source fails before anything is written.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.convert.keymap import SourceKey
from robot_rl.data.convert.options import ConvertError, ConvertOptions

ROBOT_RL_RECORD = "robot_rl"
"""Name under which an export records what the store held (keys, success, task, fps)."""


@dataclass
class SourceInfo:
    """What a reader knows about its source before reading any episode."""

    format: str
    path: Path
    lengths: np.ndarray
    """int64 ``[E]`` frames per episode, in conversion order"""
    keys: dict[str, SourceKey]
    """per-step source keys"""
    files: list[Path]
    """every file the data comes from (for the provenance checksum)"""
    fps: float | None = None
    task: str | None = None
    robot: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    """format metadata kept in the store's provenance (e.g. robomimic's env_args)"""
    record: dict[str, Any] | None = None
    """what a robot_rl export recorded about the store it came from, if this is one"""


@dataclass(frozen=True)
class Destination:
    """Where and what a writer writes."""

    path: Path
    task: str
    fps: float
    robot: str
    provenance: dict[str, Any]
    """source format, path, checksum, key mapping (recorded in a store's metadata)"""
    source: SourceInfo

    @property
    def upstream(self) -> dict[str, Any]:
        """When exporting a store: the provenance that store recorded when it was converted
        (e.g. robomimic's env_args and state layout), else {}."""
        if self.source.format != "store":
            return {}
        return dict(self.source.attrs.get("extra", {}).get("provenance") or {})

    def record(self, store_keys: Sequence[str]) -> dict[str, Any]:
        """What an export records about the store, so that importing it back is exact."""
        return {
            "store_keys": list(store_keys),
            "task": self.task,
            "robot": self.robot,
            "fps": self.fps,
            "source": self.source.attrs.get("source", self.source.format),
            "provenance": self.upstream or None,
        }


class EpisodeReader(ABC):
    """One source dataset, read episode by episode."""

    info: SourceInfo

    @abstractmethod
    def read(self, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Episode ``index`` (in conversion order) as ``{source key: [T, ...]}`` for ``keys``."""

    def success(self, index: int) -> bool | None:
        """The episode's success if the source records it per episode, else None."""
        record = self.info.record or {}
        flags = record.get("episode_success")
        return bool(flags[index]) if flags is not None and index < len(flags) else None

    def name(self, index: int) -> str:
        """How the source names episode ``index`` (e.g. ``demo_3``), for error messages."""
        return f"episode {index}"

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to release
        """Release files."""


class EpisodeWriter(ABC):
    """A destination dataset, written episode by episode."""

    done: int = 0
    """episodes already in the destination from an earlier run (a resumed conversion)"""

    @abstractmethod
    def append(self, episode: Mapping[str, np.ndarray], success: bool) -> None:
        """Write one store-keyed episode."""

    @abstractmethod
    def finish(self) -> None:
        """Make the result visible and release it (a writer is not used after this)."""

    @abstractmethod
    def abort(self) -> None:
        """Release after an error, leaving no partial episode visible."""


_READERS = {
    "store": "robot_rl.data.convert.store_io:StoreReader",
    "lerobot": "robot_rl.data.convert.lerobot_io:LeRobotReader",
    "robomimic": "robot_rl.data.convert.robomimic_io:RobomimicReader",
    "diffusion_policy": "robot_rl.data.convert.replay_buffer_io:ReplayBufferReader",
}
_WRITERS = {
    "store": "robot_rl.data.convert.store_io:StoreWriter",
    "lerobot": "robot_rl.data.convert.lerobot_io:LeRobotWriter",
    "robomimic": "robot_rl.data.convert.robomimic_io:RobomimicWriter",
}


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def writer_for(fmt: str, dest: Destination, options: ConvertOptions) -> EpisodeWriter:
    return _load(_WRITERS[fmt])(dest, options)


def open_reader(fmt: str, path: Path, options: ConvertOptions) -> EpisodeReader:
    return _load(_READERS[fmt])(path, options)


def detect_format(path: Path) -> str | None:
    """The format of an existing dataset at ``path``, or None if it is none of ours."""
    if path.is_file():
        if path.suffix in (".hdf5", ".h5"):
            return "robomimic"
        if path.name.endswith(".zarr.zip"):
            return "diffusion_policy"
        return None
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if (path / "zarr.json").is_file():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        return "store" if "format_version" in attrs else "diffusion_policy"
    if (path / ".zgroup").is_file():
        return "diffusion_policy"
    return None


def source_format(path: Path, asked: str) -> str:
    if not path.exists():
        raise ConvertError(f"{path}: no such file or directory; give an existing dataset")
    found = detect_format(path)
    if asked != "auto":
        return asked
    if found is None:
        raise ConvertError(
            f"{path}: cannot tell its format (not a LeRobot dataset with meta/info.json, a "
            "robomimic .hdf5 file, an episode store or a diffusion_policy zarr); pass "
            "from_format=<lerobot|robomimic|store|diffusion_policy>"
        )
    return found


def destination_format(path: Path, asked: str, source: str) -> str:
    """From ``to_format``, else an existing dataset's format, else the name: ``*.zarr`` is a
    store, ``*.hdf5``/``*.h5`` robomimic; any other name is a LeRobot folder when the source is
    a store (the usual export)."""
    if asked != "auto":
        return asked
    found = detect_format(path) if path.exists() else None
    if found in ("store", "lerobot", "robomimic"):
        return found
    if path.suffix == ".zarr":
        return "store"
    if path.suffix in (".hdf5", ".h5"):
        return "robomimic"
    if source == "store":
        return "lerobot"
    raise ConvertError(
        f"{path}: cannot tell which format to write; name it *.zarr for an episode store or "
        "*.hdf5 for robomimic, or pass to_format=<store|lerobot|robomimic>"
    )


def read_record(text: str | bytes | None) -> dict[str, Any] | None:
    """Parse an export's robot_rl record (JSON); None when absent or unreadable."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
