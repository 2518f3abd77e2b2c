"""What an episode store holds: per-key dtypes and feature shapes, and the checks on input.

An episode is ``{key: array [T, *feature_shape]}`` with the same T for every key. The keys
named in :mod:`robot_rl.core.keys` have fixed dtypes and ranks::

    state          float32 [T, D]
    image.<cam>    uint8   [T, H, W, 3]
    action         float32 [T, A]
    reward         float32 [T]
    is_success     bool    [T]
    terminated     bool    [T]

Any other key is stored with the dtype and feature shape it first arrives with. The first
appended episode fixes the store's schema; every later episode must match it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.core import keys as K

FORMAT_VERSION = 1
"""On-disk format version; bump it (and the golden layout test) when the layout changes."""

# Keys whose values must be finite: a NaN here silently poisons normalisation and training.
FINITE_KEYS = (K.STATE, K.ACTION, K.REWARD)

_TARGET_CHUNK_BYTES = 4 * 2**20  # ~4 MiB of raw data per chunk file
_MAX_LOWDIM_CHUNK = 1000  # frames per chunk for state / action / reward ...
_MAX_IMAGE_CHUNK = 100  # frames per chunk for cameras


class StoreError(ValueError):
    """A store cannot be opened, read or written as asked. The message says what to do."""


@dataclass(frozen=True)
class KeySpec:
    """dtype and per-frame feature shape of one stored key (the array is ``[N, *shape]``)."""

    dtype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> KeySpec:
        return cls(dtype=str(value["dtype"]), shape=tuple(int(s) for s in value["shape"]))

    @property
    def frame_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


def chunk_frames(key: str, spec: KeySpec) -> int:
    """Frames per time-chunk: ~1000 for low-dim keys, <=100 for cameras, ~4 MiB at most."""
    cap = _MAX_IMAGE_CHUNK if K.is_image_key(key) else _MAX_LOWDIM_CHUNK
    return int(max(1, min(cap, _TARGET_CHUNK_BYTES // max(1, spec.frame_bytes))))


def _fixed_rule(key: str) -> tuple[str, int] | None:
    """(dtype, ndim including time) for the keys with a fixed contract, else None."""
    if K.is_image_key(key):
        return "uint8", 4
    return {
        K.STATE: ("float32", 2),
        K.ACTION: ("float32", 2),
        K.REWARD: ("float32", 1),
        K.IS_SUCCESS: ("bool", 1),
        K.TERMINATED: ("bool", 1),
    }.get(key)


def _coerce(key: str, value: Any, where: str) -> np.ndarray:
    """Convert one episode value to the dtype its key requires, or raise naming the fix."""
    array = np.asarray(value)
    if array.ndim == 0:
        raise StoreError(f"{where}: key {key!r} is a scalar; every value must be [T, ...]")
    if array.dtype.kind not in "biuf":
        raise StoreError(
            f"{where}: key {key!r} has dtype {array.dtype}; only bool, integer and float "
            "arrays can be stored"
        )
    rule = _fixed_rule(key)
    if rule is None:
        return array
    dtype, ndim = rule
    if array.ndim != ndim:
        raise StoreError(
            f"{where}: key {key!r} has shape {array.shape}, expected {ndim} dims "
            f"([T{', ...' * (ndim - 1)}]); reshape it before appending"
        )
    if K.is_image_key(key) and array.shape[-1] != 3:
        raise StoreError(f"{where}: key {key!r} has shape {array.shape}; cameras are [T, H, W, 3]")
    # float64 -> float32 is the one conversion done for the caller; anything else (a float
    # image, an int flag) is more likely a bug than a convenience.
    if dtype == "float32" and array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype != np.dtype(dtype):
        raise StoreError(
            f"{where}: key {key!r} has dtype {array.dtype}, the store keeps it as {dtype}; "
            f"convert it (e.g. value.astype({_numpy_name(dtype)})) after checking its range"
        )
    return array


def _numpy_name(dtype: str) -> str:
    return "bool" if dtype == "bool" else f"np.{dtype}"


def _check_finite(key: str, array: np.ndarray, where: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        frame = int(np.argmax(bad))
        raise StoreError(
            f"{where}: key {key!r} has NaN or inf at frame {frame} "
            f"({int(bad.sum())} bad frames in all); fix or drop the episode before appending"
        )


def check_episode(
    episode: Mapping[str, Any], schema: Mapping[str, KeySpec] | None, where: str
) -> tuple[dict[str, np.ndarray], int]:
    """Validate and normalise an episode against the store's schema (None: no episode yet).

    Returns ``({key: array [T, ...]}, T)``. Raises :class:`StoreError` naming the key, frame
    and fix; nothing is written before this passes, so a rejected episode changes nothing.
    """
    if not isinstance(episode, Mapping) or not episode:
        raise StoreError(f"{where}: an episode must be a non-empty dict of arrays [T, ...]")
    for key in episode:
        if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
            raise StoreError(
                f"{where}: key {key!r} is not a valid name; use a non-empty str without '/' "
                "that does not start with '.'"
            )
    arrays = {key: _coerce(key, value, where) for key, value in episode.items()}
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise StoreError(
            f"{where}: keys disagree on the episode length T: {lengths}; every key needs one "
            "entry per step"
        )
    length = next(iter(lengths.values()))
    if length == 0:
        raise StoreError(f"{where}: the episode is empty (T=0); append episodes with T >= 1")
    if schema is not None:
        _check_against_schema(arrays, schema, where)
    for key in FINITE_KEYS:
        if key in arrays:
            _check_finite(key, arrays[key], where)
    return arrays, length


def _check_against_schema(
    arrays: Mapping[str, np.ndarray], schema: Mapping[str, KeySpec], where: str
) -> None:
    missing = sorted(set(schema) - set(arrays))
    extra = sorted(set(arrays) - set(schema))
    if missing or extra:
        raise StoreError(
            f"{where}: the episode's keys do not match the store's. Missing: {missing}, "
            f"extra: {extra}, store keys: {sorted(schema)}; append episodes with exactly the "
            "store's keys (or write them to a new store)"
        )
    for key, spec in schema.items():
        array = arrays[key]
        if array.dtype != np.dtype(spec.dtype):
            raise StoreError(
                f"{where}: key {key!r} has dtype {array.dtype}, the store holds {spec.dtype}; "
                f"convert it with .astype({_numpy_name(spec.dtype)})"
            )
        if tuple(array.shape[1:]) != spec.shape:
            raise StoreError(
                f"{where}: key {key!r} has feature shape {tuple(array.shape[1:])}, the store "
                f"holds {spec.shape} per frame; the episode comes from a different setup"
            )


def schema_of(arrays: Mapping[str, np.ndarray]) -> dict[str, KeySpec]:
    """The schema an accepted first episode defines."""
    return {
        key: KeySpec(dtype=str(array.dtype), shape=tuple(int(s) for s in array.shape[1:]))
        for key, array in sorted(arrays.items())
    }
