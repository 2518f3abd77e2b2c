"""Names, codecs and creation of the episode store's on-disk layout (see ``store.py``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from robot_rl.core import keys as K
from robot_rl.data.integrity import UNPUBLISHED
from robot_rl.data.schema import FORMAT_VERSION, KeySpec, StoreError, chunk_frames

EPISODE_SUCCESS = "episode_success"
ENDS = f"meta/{K.EPISODE_ENDS}"
SUCCESS = f"meta/{EPISODE_SUCCESS}"
SCHEMA_ATTR = "keys"  # attribute of data/: {key: {"dtype": ..., "shape": [...]}}
META_CHUNK = 10_000  # episodes per chunk of the per-episode arrays


def codec() -> ZstdCodec:
    # The checksum turns a damaged chunk file into a read error instead of silent garbage.
    return ZstdCodec(level=3, checksum=True)


@contextmanager
def complete_chunks() -> Iterator[None]:
    """Arrays opened here write every chunk, even all-fill ones, so "chunk file missing"
    always means damage (zarr would otherwise read it back as fill values)."""
    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


def create_data_array(data: zarr.Group, key: str, spec: KeySpec) -> zarr.Array:
    """An empty ``data/<key>`` array ``[0, *spec.shape]``, chunked along time only."""
    with complete_chunks():
        return data.create_array(
            key,
            shape=(0, *spec.shape),
            chunks=(chunk_frames(key, spec), *spec.shape),
            dtype=spec.dtype,
            fill_value=False if spec.dtype == "bool" else 0,
            compressors=codec(),
        )


def root_attrs(
    task: str, fps: float, source: str, robot: str, extra: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    for name, value in (("task", task), ("source", source), ("robot", robot)):
        if not isinstance(value, str) or not value:
            raise StoreError(f"{where}: {name}={value!r}; give a non-empty string")
    if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise StoreError(f"{where}: fps={fps!r}; give the control rate in Hz, > 0")
    try:
        extra_json = json.loads(json.dumps(dict(extra or {})))
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"{where}: extra is not JSON-serialisable ({err}); store plain data"
        ) from err
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "fps": fps,
        "source": source,
        "robot": robot,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": extra_json,
    }


def write_empty_store(path: Path, attrs: Mapping[str, Any]) -> None:
    zstore = LocalStore(path)
    root = zarr.create_group(zstore, attributes=dict(attrs), zarr_format=3)
    root.create_group("data", attributes={SCHEMA_ATTR: {}})
    meta = root.create_group("meta")
    with complete_chunks():
        for name, dtype, fill in (
            (K.EPISODE_ENDS, "int64", UNPUBLISHED),
            (EPISODE_SUCCESS, "bool", False),
        ):
            meta.create_array(
                name,
                shape=(0,),
                chunks=(META_CHUNK,),
                dtype=dtype,
                fill_value=fill,
                compressors=codec(),
            )
