"""Checks that an episode store on disk is whole, and the writer's lock.

Publication rule (see ``store.py``): ``meta/episode_ends`` is created with fill value
:data:`UNPUBLISHED` (-1). An append grows it by one (exposing a -1) and then writes the new end,
which is the commit. So the published episodes are the leading entries that are not -1, and
any -1 entries after them belong to an append that did not finish. Everything else that looks
wrong (a -1 followed by a real end, non-increasing ends, ends beyond the data, missing chunk
files) is damage, reported as :class:`StoreError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_rl.data.schema import FORMAT_VERSION, StoreError

UNPUBLISHED = -1
"""Fill value of ``meta/episode_ends``: an entry an append reserved but did not publish."""

LOCK_NAME = ".writer.lock"
ROOT_ATTRS = ("format_version", "task", "fps", "source", "robot", "created", "extra")


def published_ends(raw: np.ndarray, where: str) -> np.ndarray:
    """The published prefix of the raw ``episode_ends`` array ``[E_raw]`` -> int64 ``[E]``."""
    raw = np.asarray(raw, dtype=np.int64)
    unpublished = raw == UNPUBLISHED
    n = int(np.argmax(unpublished)) if unpublished.any() else len(raw)
    if not unpublished[n:].all():
        raise StoreError(
            f"{where}: meta/episode_ends has an unpublished entry at episode {n} followed by "
            f"published ones ({raw[n:].tolist()[:8]}...); the store is damaged: restore it from a "
            "copy or rebuild it from its source data"
        )
    ends = raw[:n]
    if n and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        bad = 0 if ends[0] <= 0 else int(np.argmax(np.diff(ends) <= 0)) + 1
        raise StoreError(
            f"{where}: meta/episode_ends is not strictly increasing from 1 (episode {bad} ends at "
            f"{int(ends[bad])}, previous end {int(ends[bad - 1]) if bad else 0}); the store is "
            "damaged: restore it from a copy or rebuild it"
        )
    return ends


def check_root_attrs(attrs: Mapping[str, Any], where: str) -> None:
    """Is this a robot_rl episode store that this version can read?"""
    if "format_version" not in attrs:
        raise StoreError(
            f"{where}: a zarr group without 'format_version', so not a robot_rl episode store; "
            "open a store made by EpisodeStore.create or convert the data first"
        )
    version = attrs["format_version"]
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"{where}: format_version={version!r} is not a positive int; damaged")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{where}: written in store format {version}, this robot_rl reads formats up to "
            f"{FORMAT_VERSION}; upgrade robot_rl to read it"
        )
    missing = [name for name in ROOT_ATTRS if name not in attrs]
    if missing:
        raise StoreError(f"{where}: root attrs lack {missing}; the store's zarr.json is damaged")


def chunk_files(path: Path, array: zarr.Array, n_rows: int) -> Iterable[Path]:
    """The chunk files that hold rows ``[0, n_rows)`` of an array chunked only along time."""
    rows_per_chunk = array.chunks[0]
    n_chunks = -(-n_rows // rows_per_chunk)
    tail = (0,) * (array.ndim - 1)
    base = path / array.path
    for i in range(n_chunks):
        yield base / array.metadata.encode_chunk_key((i, *tail))


def check_rows(path: Path, name: str, array: zarr.Array, n_rows: int, where: str) -> None:
    """Raise if the array is shorter than ``n_rows`` or a chunk file holding them is missing.

    zarr reads a missing chunk as fill values, so a deleted or never-copied chunk file would
    otherwise pass as zeros; arrays are written with ``write_empty_chunks`` so every chunk
    holding published rows exists.
    """
    if array.shape[0] < n_rows:
        raise StoreError(
            f"{where}: {name} has {array.shape[0]} rows but episode_ends needs {n_rows}; the "
            "store is truncated: restore it from a copy or rebuild it"
        )
    missing = [p for p in chunk_files(path, array, n_rows) if not p.is_file()]
    if missing:
        raise StoreError(
            f"{where}: {name} lacks {len(missing)} chunk file(s), e.g. "
            f"{missing[0].relative_to(path)}; the store is truncated (an incomplete copy?): "
            "restore it from a complete copy"
        )


def remove_partial_files(path: Path) -> int:
    """Delete ``*.partial`` temp files left by a writer that died mid-rename."""
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            if filename.endswith(".partial"):
                os.unlink(os.path.join(dirpath, filename))
                removed += 1
    return removed


class WriterLock:
    """An exclusive advisory lock on ``<store>/.writer.lock``: one writer per store.

    Two writers would append at the same frame offset and overwrite each other. ``flock``
    is released by the kernel when the process dies, so a ``kill -9`` never leaves a stale
    lock. The lock is per handle: a second writable handle in the same process is refused too.
    """

    def __init__(self, path: Path) -> None:
        self._file = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, rely on the caller
            return
        handle = open(path / LOCK_NAME, "a+b")  # noqa: SIM115 - kept open while locked
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.close()
            raise StoreError(
                f"{path}: another writer has this store open for appending (this or another "
                "process); close it (store.close() or use `with`), or open with mode='r' to read"
            ) from err
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
