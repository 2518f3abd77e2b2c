"""diffusion_policy's zarr replay buffers (``ReplayBuffer``), read-only::

    buffer.zarr/ (or buffer.zarr.zip; zarr v2 or v3)
      data/<key>          [N, ...]   e.g. action, state, img (float32 0..255), keypoint
      meta/episode_ends   int [E]    exclusive cumulative ends

Images are the keys whose frames are ``[H, W, 3]``; float frames holding integers 0..255
become uint8 (see ``keymap.py``). The buffer records no control rate: pass ``fps=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.convert.formats import EpisodeReader, SourceInfo
from robot_rl.data.convert.keymap import SourceKey
from robot_rl.data.convert.options import ConvertError, ConvertOptions

_MIN_IMAGE_SIDE = 8


def _open_root(path: Path) -> Any:
    import zarr
    from zarr.storage import LocalStore, ZipStore

    try:  # diffusion_policy's real-robot buffers compress frames with imagecodecs' JPEG 2000
        from imagecodecs.numcodecs import register_codecs

        register_codecs()
    except ImportError:
        pass
    is_zip = path.is_file()
    store = ZipStore(path, mode="r") if is_zip else LocalStore(path, read_only=True)
    try:
        return zarr.open_group(store, mode="r")
    except Exception as err:  # zarr raises several types for missing or bad metadata
        raise ConvertError(
            f"{path}: cannot be opened as a zarr replay buffer ({type(err).__name__}: {err}); "
            "it must hold data/<key> arrays and meta/episode_ends"
        ) from err


class ReplayBufferReader(EpisodeReader):
    def __init__(self, path: Path, options: ConvertOptions) -> None:
        root = _open_root(path)
        try:
            self._data = {key: root["data"][key] for key in root["data"].array_keys()}
            ends = np.asarray(root["meta"]["episode_ends"][:], dtype=np.int64)
        except Exception as err:  # missing groups, unknown codecs, damaged chunks
            raise ConvertError(
                f"{path}: data/ or meta/episode_ends cannot be read ({type(err).__name__}: "
                f"{err}); if it names an unknown codec such as imagecodecs_jpeg2k, install "
                "imagecodecs (pip install imagecodecs); otherwise the buffer is damaged"
            ) from err
        self._ends = _check_ends(path, ends, self._data)
        self._starts = np.concatenate([[0], self._ends[:-1]])
        self.info = SourceInfo(
            format="diffusion_policy",
            path=path,
            lengths=self._ends - self._starts,
            keys={key: _source_key(array) for key, array in self._data.items()},
            files=[path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()),
            fps=root.attrs.get("fps"),
        )

    def read(self, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        start, stop = int(self._starts[index]), int(self._ends[index])
        return {key: np.asarray(self._data[key][start:stop]) for key in keys}


def _source_key(array: Any) -> SourceKey:
    shape = tuple(int(s) for s in array.shape[1:])
    image = len(shape) == 3 and shape[-1] == 3 and min(shape[:2]) >= _MIN_IMAGE_SIDE
    return SourceKey(str(array.dtype), shape, image)


def _check_ends(path: Path, ends: np.ndarray, data: dict[str, Any]) -> np.ndarray:
    if ends.ndim != 1 or len(ends) == 0:
        raise ConvertError(f"{path}: meta/episode_ends is empty; the buffer holds no episode")
    steps = np.diff(ends, prepend=0)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0))
        raise ConvertError(
            f"{path}: meta/episode_ends is not strictly increasing at episode {bad} "
            f"(end {int(ends[bad])} after {int(ends[bad - 1]) if bad else 0}); the episode "
            "index is broken: rebuild the buffer"
        )
    for key, array in data.items():
        if array.shape[0] != ends[-1]:
            raise ConvertError(
                f"{path}: data/{key} has {array.shape[0]} rows but meta/episode_ends ends at "
                f"{int(ends[-1])}; the lengths do not match: rebuild the buffer"
            )
    return ends
