"""``convert(src, dst)``: stream episodes from any readable format into any writable one.

One episode is in memory at a time. A store destination is resumable: re-running the same
conversion continues after the last complete episode (an append publishes a whole episode or
nothing). Exports to LeRobot and robomimic are written aside and appear only when complete.
The store records where its data came from (format, path, SHA-256 of the source files, key
mapping) under ``meta["extra"]["provenance"]``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robot_rl.core import keys as K
from robot_rl.data.convert.formats import (
    Destination,
    EpisodeReader,
    EpisodeWriter,
    destination_format,
    open_reader,
    source_format,
    writer_for,
)
from robot_rl.data.convert.keymap import ResolvedKeys, map_episode, resolve
from robot_rl.data.convert.options import ConvertError, ConvertOptions
from robot_rl.data.schema import StoreError

_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError)
"""What h5py, pyarrow, zarr and LeRobot raise on damaged data; reported with file and episode."""


def convert(src: str | Path, dst: str | Path, options: ConvertOptions | None = None) -> dict:
    """Convert the dataset at ``src`` into ``dst``; returns a summary (episodes, frames/s)."""
    options = options or ConvertOptions()
    src, dst = Path(src), Path(dst)
    src_format = source_format(src, options.from_format)
    dst_format = destination_format(dst, options.to_format, src_format)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ConvertError(f"{src}: source and destination are the same path; choose another")
    start_time = time.perf_counter()
    reader = open_reader(src_format, src, options)
    try:
        resolved = source_keys(reader, options)
        n = len(reader.info.lengths)
        if options.max_episodes is not None:
            n = min(n, options.max_episodes)
        bounds = (
            action_bounds(reader, resolved, n) if options.keys.action_norm == "minmax" else None
        )
        dest = destination(reader, dst, resolved, bounds, options)
        writer = writer_for(dst_format, dest, options)
        try:
            frames = copy_episodes(reader, writer, resolved, bounds, range(writer.done, n), options)
        except BaseException:
            writer.abort()
            raise
        writer.finish()
    finally:
        reader.close()
    wall = time.perf_counter() - start_time
    return {
        "src": str(src),
        "dst": str(dst),
        "from_format": src_format,
        "to_format": dst_format,
        "episodes": n,
        "frames": int(reader.info.lengths[:n].sum()),
        "resumed_from_episode": writer.done,
        "converted_frames": frames,
        "wall_s": wall,
        "frames_per_s": frames / wall if wall > 0 else 0.0,
        "sha256": dest.provenance["sha256"],
        "keys": dest.provenance["keys"],
    }


def source_keys(reader: EpisodeReader, options: ConvertOptions) -> ResolvedKeys:
    """The key mapping; a dataset exported by robot_rl maps back to exactly the keys it held."""
    info = reader.info
    resolved = resolve(options.keys, info.keys, info.format, str(info.path))
    record = info.record
    if record and options.keys.is_default and "store_keys" in record:
        held = set(record["store_keys"])
        resolved = ResolvedKeys(
            state=resolved.state if K.STATE in held else (),
            fields=tuple((dst, src) for dst, src in resolved.fields if dst in held),
        )
    return resolved


def copy_episodes(
    reader: EpisodeReader,
    writer: EpisodeWriter,
    resolved: ResolvedKeys,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    episodes: range,
    options: ConvertOptions,
) -> int:
    """Read, map and write ``episodes`` one at a time; returns the frames written."""
    lengths = reader.info.lengths
    total = int(lengths[episodes.start : episodes.stop].sum())
    bar = tqdm(
        total=total,
        unit="frame",
        unit_scale=True,
        desc=f"convert {reader.info.path.name}",
        disable=not options.progress,
    )
    written = 0
    with bar:
        for index in episodes:
            where = f"{reader.info.path}: {reader.name(index)}"
            raw = read_episode(reader, index, resolved.source_keys, where)
            episode = map_episode(resolved, raw, bounds, where)
            check_lengths(episode, resolved, int(lengths[index]), where)
            success = reader.success(index)
            if success is None:
                success = bool(episode[K.IS_SUCCESS].any()) if K.IS_SUCCESS in episode else False
            try:
                writer.append(episode, success)
            except StoreError as err:
                raise ConvertError(f"{where}: not written: {err}") from err
            written += int(lengths[index])
            bar.update(int(lengths[index]))
    return written


def read_episode(
    reader: EpisodeReader, index: int, keys: Sequence[str], where: str
) -> dict[str, np.ndarray]:
    try:
        return reader.read(index, keys)
    except ConvertError:
        raise
    except _READ_ERRORS as err:
        raise ConvertError(
            f"{where}: reading it failed ({type(err).__name__}: {err}); the file is damaged or "
            "truncated: restore it from a complete copy (episodes before this one are converted "
            "and a re-run resumes here)"
        ) from err


def check_lengths(
    episode: dict[str, np.ndarray], resolved: ResolvedKeys, length: int, where: str
) -> None:
    sources = dict(resolved.fields)
    for key, value in episode.items():
        if len(value) != length:
            source = sources.get(key, [k for k, _ in resolved.state])
            raise ConvertError(
                f"{where}: {source!r} has {len(value)} frames but the episode has {length}; "
                "the source is inconsistent: fix or drop this episode (max_episodes=N converts "
                "the ones before it)"
            )


def action_bounds(
    reader: EpisodeReader, resolved: ResolvedKeys, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max of the action over the episodes to convert (one pass)."""
    key = dict(resolved.fields)[K.ACTION]
    low = high = None
    for index in range(n):
        where = f"{reader.info.path}: {reader.name(index)}"
        action = read_episode(reader, index, [key], where)[key]
        action = np.asarray(action, dtype=np.float64).reshape(len(action), -1)
        if not np.isfinite(action).all():
            raise ConvertError(f"{where}: {key!r} has NaN or inf; fix or drop the episode")
        low = action.min(0) if low is None else np.minimum(low, action.min(0))
        high = action.max(0) if high is None else np.maximum(high, action.max(0))
    assert low is not None and high is not None
    return low, high


def destination(
    reader: EpisodeReader,
    dst: Path,
    resolved: ResolvedKeys,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    options: ConvertOptions,
) -> Destination:
    info = reader.info
    record = info.record or {}
    fps = options.fps or record.get("fps") or info.fps
    if not fps:
        raise ConvertError(
            f"{info.path}: the source does not record its control rate; pass fps=<Hz>"
        )
    provenance: dict[str, Any] = {
        "format": info.format,
        "path": str(info.path.resolve()),
        **checksum(info.files, info.path),
        "keys": resolved.to_json(),
        "converted": datetime.now(UTC).isoformat(timespec="seconds"),
        "attrs": info.attrs if info.format != "store" else {},
    }
    if bounds is not None:
        provenance["action_bounds"] = {"low": bounds[0].tolist(), "high": bounds[1].tolist()}
    return Destination(
        path=dst,
        task=options.task or record.get("task") or info.task or info.path.stem,
        fps=float(fps),
        robot=options.robot or record.get("robot") or info.robot or "unknown",
        provenance=provenance,
        source=info,
    )


def checksum(files: Sequence[Path], root: Path) -> dict[str, Any]:
    """SHA-256 over every source file's relative path and bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    n_bytes = 0
    base = root if root.is_dir() else root.parent
    for path in sorted(files):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(2**20):
                digest.update(block)
                n_bytes += len(block)
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": n_bytes}
