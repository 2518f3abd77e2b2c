"""The episode store as a conversion source and as a resumable destination."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.convert.formats import Destination, EpisodeReader, EpisodeWriter, SourceInfo
from robot_rl.data.convert.keymap import SourceKey
from robot_rl.data.convert.options import ConvertError, ConvertOptions
from robot_rl.data.integrity import LOCK_NAME
from robot_rl.data.store import EpisodeStore

PROVENANCE = "provenance"
"""Key of the conversion record in the store's ``extra`` metadata."""


class StoreReader(EpisodeReader):
    def __init__(self, path: Path, options: ConvertOptions) -> None:
        self._store = EpisodeStore.open(path, mode="r")
        meta = self._store.meta
        self.info = SourceInfo(
            format="store",
            path=path,
            lengths=self._store.episode_lengths,
            keys={
                key: SourceKey(spec.dtype, spec.shape, image=K.is_image_key(key))
                for key, spec in self._store.schema.items()
            },
            files=sorted(p for p in path.rglob("*") if p.is_file() and p.name != LOCK_NAME),
            fps=float(meta["fps"]),
            task=meta["task"],
            robot=meta["robot"],
            attrs=meta,
        )
        self._success = self._store.episode_success

    def read(self, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {key: self._store.read(key, [index]) for key in keys}

    def success(self, index: int) -> bool | None:
        return bool(self._success[index])


class StoreWriter(EpisodeWriter):
    """Appends to a new store, or resumes one that an earlier run of the same conversion
    (same source checksum and key mapping) left part-way: it continues after the last
    complete episode, because an append publishes a whole episode or nothing."""

    def __init__(self, dest: Destination, options: ConvertOptions) -> None:
        self._path = dest.path
        self._created = False
        if dest.path.exists() and not options.overwrite:
            self._store = EpisodeStore.open(dest.path, mode="a")
            try:
                self.done = _resume_point(self._store, dest)
            except BaseException:
                self._store.close()
                raise
        else:
            self._store = EpisodeStore.create(
                dest.path,
                task=dest.task,
                fps=dest.fps,
                source=dest.source.format,
                robot=dest.robot,
                extra={PROVENANCE: dest.provenance},
                overwrite=options.overwrite,
            )
            self._created = True

    def append(self, episode: Mapping[str, np.ndarray], success: bool) -> None:
        self._store.append_episode(episode, success=success)

    def finish(self) -> None:
        self._store.close()

    def abort(self) -> None:
        self._store.close()
        if self._created and self._store.n_episodes == 0:
            shutil.rmtree(self._path, ignore_errors=True)  # nothing converted: leave nothing


def _resume_point(store: EpisodeStore, dest: Destination) -> int:
    """Episodes already converted into ``store`` by the same conversion; raises otherwise."""
    where = f"{dest.path}"
    recorded = store.meta["extra"].get(PROVENANCE)
    if not recorded:
        raise ConvertError(
            f"{where}: an episode store that was not made by a conversion; choose a new "
            "destination, or pass overwrite=true to replace it"
        )
    ours = dest.provenance
    for name, what in (("sha256", "source files"), ("keys", "key mapping")):
        if recorded.get(name) != ours.get(name):
            raise ConvertError(
                f"{where}: was converted from {recorded.get('path')} with other {what} "
                f"({name} differs), so it cannot be resumed; pass overwrite=true to start again"
            )
    done = store.n_episodes
    expected = dest.source.lengths[:done]
    if done > len(dest.source.lengths) or not np.array_equal(store.episode_lengths, expected):
        raise ConvertError(
            f"{where}: its {done} episodes do not match the source's first episodes "
            "(lengths differ); pass overwrite=true to start again"
        )
    return done
