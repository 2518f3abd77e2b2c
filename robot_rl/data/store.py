"""The episode store: every episode robot_rl collects or learns from, in one zarr v3 directory.

Layout (N frames in E episodes; diffusion_policy's ReplayBuffer idea)::

    store.zarr/
      zarr.json                 root attrs: format_version, task, fps, source, robot,
                                created (ISO 8601, UTC), extra (free-form dict)
      data/                     attrs: keys = {key: {dtype, shape}} (the schema)
        state                   float32 [N, D]        chunks (<=1000, D)
        image.<cam>             uint8   [N, H, W, 3]  chunks (<=100, H, W, 3)
        action                  float32 [N, A]
        reward, is_success, terminated, <any other per-step key>  [N, ...]
      meta/
        episode_ends            int64 [E]  exclusive cumulative ends; fill -1 = unpublished
        episode_success         bool  [E]
      .writer.lock              flock of the one writer

Every chunk is zstd-compressed with a checksum. Episode i is frames
``[episode_ends[i-1], episode_ends[i])``.

Crash safety. zarr's LocalStore replaces each file atomically (temp file + rename). An append
(1) grows every ``data/`` array, ``episode_success`` and ``episode_ends`` by the new rows
(the new ``episode_ends`` entry reads as the fill value -1, which readers treat as
unpublished), (2) writes the new rows and ``episode_success[i]``, and only then (3) writes
``episode_ends[i]``: that single file replacement is the commit. A crash before (3) leaves
frames past the last published end and a trailing -1, both invisible to readers and trimmed
by the next writer. A crash never changes an earlier frame or end: a chunk that also holds
published rows is rewritten whole from its old contents plus the new rows, atomically.
Files are not fsync'ed: this survives the process dying (``kill -9``), not a power cut.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore

from robot_rl.core import keys as K
from robot_rl.data import integrity, layout
from robot_rl.data.schema import (
    FINITE_KEYS,
    KeySpec,
    StoreError,
    check_episode,
    schema_of,
)
from robot_rl.data.stats import feature_stats

_STATS_BLOCK_VALUES = 2**23  # ~64 MiB of float64 per statistics block


class EpisodeStore:
    """Append-only store of episodes; one writer (mode "a") and any number of readers."""

    def __init__(self, path: Path, mode: str) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self._path = path
        self._mode = mode
        self._stats: dict[str, tuple[int, dict[str, np.ndarray]]] = {}
        self._lock = integrity.WriterLock(path) if mode == "a" else None
        try:
            self._zstore = LocalStore(path, read_only=mode == "r")
            self._load()
            if mode == "a":
                self._repair()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- create / open / close

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        task: str,
        fps: float,
        source: str,
        robot: str,
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EpisodeStore:
        """Create an empty store at ``path`` and return it open for appending.

        Refuses an existing non-empty path unless ``overwrite=True``, and never overwrites a
        directory that is not an episode store. The store is built in a sibling temp directory
        and renamed into place, so a crash here leaves no half-made store at ``path``.
        """
        path = Path(path)
        where = f"EpisodeStore.create({path})"
        attrs = layout.root_attrs(task, fps, source, robot, extra, where)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not overwrite:
                raise StoreError(
                    f"{where}: the path already exists; append with EpisodeStore.open(path, "
                    "mode='a'), choose a new path, or pass overwrite=True to replace it"
                )
            if not (path / "zarr.json").is_file():
                raise StoreError(
                    f"{where}: refusing to overwrite {path}: it is not an episode store; "
                    "remove it yourself if it really should go"
                )
            integrity.WriterLock(path).release()  # refuse to delete under a live writer
            shutil.rmtree(path)
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            layout.write_empty_store(tmp, attrs)
            tmp.rename(path)  # an empty directory at `path` is replaced, a non-empty one fails
        except OSError as err:
            raise StoreError(f"{where}: could not create the store: {err}") from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(path, "a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EpisodeStore:
        """Open an existing store: ``mode="r"`` to read, ``"a"`` to append (one writer).

        Opening for append trims what a crashed append left behind (frames past the last
        published episode, ``*.partial`` temp files).
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode={mode!r}; use 'r' to read or 'a' to append")
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(
                f"{path}: no episode store here (no zarr.json); create one with "
                "EpisodeStore.create(path, task=..., fps=..., source=..., robot=...)"
            )
        return cls(path, mode)

    def close(self) -> None:
        """Release the writer lock; the handle can still read."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._mode = "r"

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({str(self._path)!r}, mode={self._mode!r}, "
            f"episodes={self.n_episodes}, frames={self.n_frames}, keys={list(self.keys)})"
        )

    # ---------------------------------------------------------------- what is published

    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """int64 ``[E]``, exclusive cumulative ends of the published episodes."""
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        """int64 ``[E]``."""
        return np.diff(self._ends, prepend=0)

    @property
    def episode_success(self) -> np.ndarray:
        """bool ``[E]``."""
        return self._success.copy()

    @property
    def keys(self) -> tuple[str, ...]:
        """Per-step keys, sorted; empty until the first episode is published."""
        return tuple(self._schema)

    @property
    def schema(self) -> dict[str, KeySpec]:
        return dict(self._schema)

    @property
    def meta(self) -> dict[str, Any]:
        """Root attrs: format_version, task, fps, source, robot, created, extra."""
        return copy.deepcopy(self._attrs)

    def episode_slice(self, i: int) -> slice:
        """Frames of episode ``i`` (negative counts from the end)."""
        i = self._episode_index(i)
        return slice(int(self._ends[i - 1]) if i else 0, int(self._ends[i]))

    def get_episode(self, i: int) -> dict[str, np.ndarray]:
        """``{key: [T_i, ...]}`` for episode ``i``."""
        frames = self.episode_slice(i)
        return {key: self._read_rows(key, frames.start, frames.stop) for key in self._schema}

    def read(self, key: str, episodes: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Published frames of ``key``, ``[N, ...]``; or only those of ``episodes``, in order."""
        self._check_key(key)
        if episodes is None:
            return self._read_rows(key, 0, self.n_frames)
        index = [self._episode_index(int(i)) for i in np.asarray(episodes).reshape(-1)]
        starts = np.concatenate([[0], self._ends[:-1]])
        runs: list[list[int]] = []  # merge consecutive episodes into one read
        for i in index:
            if runs and runs[-1][1] == starts[i]:
                runs[-1][1] = int(self._ends[i])
            else:
                runs.append([int(starts[i]), int(self._ends[i])])
        if not runs:
            spec = self._schema[key]
            return np.zeros((0, *spec.shape), dtype=spec.dtype)
        return np.concatenate([self._read_rows(key, a, b) for a, b in runs])

    def stats(self, key: str) -> dict[str, np.ndarray]:
        """float32 ``min``/``max``/``mean``/``std`` over frames: ``[*feature]``, or ``[3]`` per
        channel for cameras. Cached until the next append."""
        self._check_key(key)
        cached = self._stats.get(key)
        if cached is None or cached[0] != self.n_frames:
            array = self._arrays[key]
            per_frame = max(1, int(np.prod(array.shape[1:], dtype=np.int64)))
            chunk = array.chunks[0]
            block = max(chunk, (_STATS_BLOCK_VALUES // per_frame) // chunk * chunk)
            result = feature_stats(
                lambda a, b: self._read_rows(key, a, b),
                self.n_frames,
                block,
                per_channel=K.is_image_key(key),
            )
            cached = (self.n_frames, result)
            self._stats[key] = cached
        return {name: value.copy() for name, value in cached[1].items()}

    def refresh(self) -> None:
        """Re-read what is published (a reader's view is fixed at open or last refresh)."""
        self._load()

    def validate(self) -> None:
        """Read back every published chunk: structure, checksums, finiteness of state/action.

        Raises :class:`StoreError` naming the key and frame; costs a full read of the store.
        """
        self._load()
        for key, array in self._arrays.items():
            step = array.chunks[0] * 16
            for start in range(0, self.n_frames, step):
                rows = self._read_rows(key, start, min(self.n_frames, start + step))
                if key in FINITE_KEYS:
                    flat = rows.reshape(len(rows), -1)
                    bad = ~np.isfinite(flat).all(axis=1)
                    if bad.any():
                        raise StoreError(
                            f"{self._path}: {key!r} has NaN or inf at frame "
                            f"{start + int(np.argmax(bad))}; the store is damaged"
                        )

    # ---------------------------------------------------------------- appending

    def append_episode(
        self, episode: Mapping[str, np.ndarray], *, success: bool | None = None
    ) -> int:
        """Append one episode ``{key: [T, ...]}`` and return its index.

        ``success`` defaults to ``is_success.any()`` when that key is stored, else False.
        The episode is checked in full before anything is written, so a rejected episode
        changes nothing; see the module docstring for what a crash can leave behind.
        """
        if self._mode != "a":
            raise StoreError(
                f"{self._path}: this handle is read-only (opened with mode='r', or closed); "
                "append through EpisodeStore.open(path, mode='a')"
            )
        index = self.n_episodes
        where = f"{self._path}: episode {index}"
        arrays, length = check_episode(episode, self._schema if index else None, where)
        if success is None:
            success = bool(arrays[K.IS_SUCCESS].any()) if K.IS_SUCCESS in arrays else False
        if index == 0:
            self._start_schema(arrays)
        start, stop = self.n_frames, self.n_frames + length
        sync(self._write_unpublished(arrays, start, stop, index, bool(success)))
        self._publish(index, stop)
        self._ends = np.append(self._ends, np.int64(stop))
        self._success = np.append(self._success, bool(success))
        return index

    async def _write_unpublished(
        self, arrays: Mapping[str, np.ndarray], start: int, stop: int, index: int, success: bool
    ) -> None:
        """Steps 1 and 2 of an append (see the module docstring); invisible to readers."""
        data = [self._arrays[key].async_array for key in arrays]
        success_array = self._success_array.async_array
        await _all(
            *(a.resize((stop, *a.shape[1:])) for a in data),
            success_array.resize((index + 1,)),
            # Reserving the entry exposes the fill value -1, which readers skip.
            self._ends_array.async_array.resize((index + 1,)),
        )
        await _all(
            *(a.setitem(slice(start, stop), arrays[k]) for a, k in zip(data, arrays, strict=True)),
            success_array.setitem(index, np.bool_(success)),
        )

    def _publish(self, index: int, end: int) -> None:
        """The commit: one atomic chunk-file replacement makes episode ``index`` visible."""
        self._ends_array[index] = end

    def _start_schema(self, arrays: Mapping[str, np.ndarray]) -> None:
        """First episode: create one array per key (after clearing any crashed attempt)."""
        self._reset_data()
        schema = schema_of(arrays)
        data = zarr.open_group(self._zstore, path="data", zarr_format=3)
        for key, spec in schema.items():
            self._arrays[key] = layout.create_data_array(data, key, spec)
        data.attrs[layout.SCHEMA_ATTR] = {key: spec.to_json() for key, spec in schema.items()}
        self._schema = schema

    # ---------------------------------------------------------------- loading and repair

    def _load(self) -> None:
        """Read the published state and check that every published chunk is on disk."""
        where = str(self._path)
        root = self._open(lambda: zarr.open_group(self._zstore, mode="r", zarr_format=3), "/")
        attrs = dict(root.attrs)
        integrity.check_root_attrs(attrs, where)
        ends_array = self._open_array(layout.ENDS)
        success_array = self._open_array(layout.SUCCESS)
        raw = self._read_array(ends_array, layout.ENDS, 0, ends_array.shape[0])
        # The last raw entry may be a reservation whose chunk file was never written.
        integrity.check_rows(self._path, layout.ENDS, ends_array, max(0, len(raw) - 1), where)
        ends = integrity.published_ends(raw, where)
        integrity.check_rows(self._path, layout.SUCCESS, success_array, len(ends), where)
        schema: dict[str, KeySpec] = {}
        arrays: dict[str, zarr.Array] = {}
        if len(ends):  # before the first publish the data arrays may be half made: ignore
            data = self._open(lambda: zarr.open_group(self._zstore, path="data", mode="r"), "data")
            specs = data.attrs.get(layout.SCHEMA_ATTR) or {}
            if not specs:
                raise StoreError(f"{where}: data/ lists no keys but episodes exist; damaged")
            for key, value in sorted(specs.items()):
                schema[key] = KeySpec.from_json(value)
                arrays[key] = self._open_array(f"data/{key}")
                spec = KeySpec(str(arrays[key].dtype), tuple(arrays[key].shape[1:]))
                if spec != schema[key]:
                    raise StoreError(f"{where}: data/{key} is {spec}, data/ lists {schema[key]}")
                integrity.check_rows(self._path, f"data/{key}", arrays[key], int(ends[-1]), where)
        self._attrs, self._schema, self._arrays = attrs, schema, arrays
        self._ends_array, self._success_array = ends_array, success_array
        self._ends = ends
        self._success = self._read_array(success_array, layout.SUCCESS, 0, len(ends)).astype(bool)

    def _repair(self) -> None:
        """Writer only: drop what an unfinished append left past the published end."""
        integrity.remove_partial_files(self._path)
        n_episodes, n_frames = self.n_episodes, self.n_frames
        data_dir = self._path / "data"
        if n_episodes == 0 and data_dir.is_dir() and any(p.is_dir() for p in data_dir.iterdir()):
            self._reset_data()  # a first append died: its schema was never published
        for array in self._arrays.values():
            if array.shape[0] > n_frames:
                array.resize((n_frames, *array.shape[1:]))
        if self._success_array.shape[0] > n_episodes:
            self._success_array.resize((n_episodes,))
        if self._ends_array.shape[0] > n_episodes:
            # Reset reserved entries to -1 before shrinking: rows beyond the shape survive in
            # a partial chunk, and the next reservation must expose -1, not an old value.
            self._ends_array[n_episodes:] = integrity.UNPUBLISHED
            self._ends_array.resize((n_episodes,))

    def _reset_data(self) -> None:
        data_dir = self._path / "data"
        for child in data_dir.iterdir() if data_dir.is_dir() else ():
            if child.is_dir():
                shutil.rmtree(child)
        zarr.open_group(self._zstore, path="data", zarr_format=3).attrs[layout.SCHEMA_ATTR] = {}
        self._arrays, self._schema, self._stats = {}, {}, {}

    # ---------------------------------------------------------------- small helpers

    def _open(self, opener: Any, name: str) -> Any:
        try:
            with layout.complete_chunks():
                return opener()
        except Exception as err:  # zarr raises several types for missing or bad metadata
            raise StoreError(
                f"{self._path}: cannot open {name!r} ({type(err).__name__}: {err}); the store is "
                "truncated or damaged: restore it from a complete copy"
            ) from err

    def _open_array(self, name: str) -> zarr.Array:
        return self._open(lambda: zarr.open_array(self._zstore, path=name, zarr_format=3), name)

    def _read_array(self, array: zarr.Array, name: str, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(array[start:stop])
        except Exception as err:  # codec / checksum / IO errors from a damaged chunk file
            raise StoreError(
                f"{self._path}: reading {name} rows [{start}, {stop}) failed "
                f"({type(err).__name__}: {err}); a chunk file is damaged: restore the store"
            ) from err

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        return self._read_array(self._arrays[key], f"data/{key}", start, stop)

    def _check_key(self, key: str) -> None:
        if key not in self._schema:
            raise KeyError(f"{key!r} is not stored in {self._path}; keys: {list(self.keys)}")

    def _episode_index(self, i: int) -> int:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range: {self._path} has {self.n_episodes}")
        return i % self.n_episodes


async def _all(*writes: Awaitable[Any]) -> None:
    """Run writes concurrently and wait for every one before raising the first error: a
    failed append must not leave writes in flight that could land on top of the next one."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
