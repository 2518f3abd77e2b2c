"""LeRobot datasets (format v3.0: parquet + PNG images or mp4 videos), through LeRobot's API.

Reading opens ``LeRobotDatasetMetadata`` and ``LeRobotDataset`` (never downloading: every file
is checked to be on disk first) and takes each episode as one slice of its frame table, which
is memory-mapped Arrow, so memory stays bounded. Video frames are decoded with PyAV, one
sequential pass per episode segment (LeRobot's own decoders need torchcodec or
``torchvision.io``, which CPU-only machines may lack, and seek once per frame).

Writing uses ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize`` into
a temporary folder that is renamed into place when complete. Store keys become LeRobot's::

    state -> observation.state      image.<cam> -> observation.images.<cam>
    action -> action                reward -> next.reward
    terminated -> next.done         is_success -> next.success
    timestamp: LeRobot derives it   any other key keeps its name
    from frame_index / fps

and ``meta/robot_rl.json`` records the store's keys, task, fps and per-episode success, so
that converting the export back gives exactly the store it came from.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
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
from robot_rl.lerobot_compat import import_lerobot_datasets

CODEBASE_VERSION = "v3.0"
RECORD_FILE = f"meta/{ROBOT_RL_RECORD}.json"
_STORE_TO_LEROBOT = {
    K.STATE: "observation.state",
    K.ACTION: "action",
    K.REWARD: "next.reward",
    K.TERMINATED: "next.done",
    K.IS_SUCCESS: "next.success",
}
_BOOKKEEPING = ("index", "episode_index")
_PLAIN = SourceKey("float32", ())
TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s


def lerobot_name(store_key: str) -> str:
    if K.is_image_key(store_key):
        return f"observation.images.{K.camera_name(store_key)}"
    return _STORE_TO_LEROBOT.get(store_key, store_key)


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()  # LeRobot maps every saved episode; one bar is ours


class LeRobotReader(EpisodeReader):
    def __init__(self, path: Path, options: ConvertOptions) -> None:
        lerobot = import_lerobot_datasets()
        _quiet_datasets()
        repo_id = f"local/{path.name}"
        try:
            meta = lerobot.LeRobotDatasetMetadata(repo_id, root=path)
        except (OSError, ValueError, KeyError) as err:
            raise ConvertError(
                f"{path}: LeRobot cannot read the metadata in meta/ ({type(err).__name__}: "
                f"{err}); the dataset is incomplete: restore meta/ from a complete copy"
            ) from err
        if meta.episodes is None or meta.total_episodes == 0:
            raise ConvertError(f"{path}: meta/episodes lists no episode; nothing to convert")
        version = meta.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise ConvertError(
                f"{path}: LeRobot dataset format {version}, this reads {CODEBASE_VERSION}; "
                "upgrade it with python -m lerobot.datasets.v30.convert_dataset_v21_to_v30"
            )
        columns = [c for c in meta.episodes.column_names if c not in ("tasks",)]
        episodes = meta.episodes.select_columns(columns).with_format("numpy")[:]
        lengths = _check_episode_index(path, episodes, meta.total_episodes)
        files = _check_files(path, meta, episodes)
        self._meta = meta
        self._episodes = episodes
        self._video_keys = list(meta.video_keys)
        try:
            dataset = lerobot.LeRobotDataset(
                repo_id, root=path, download_videos=False, video_backend="pyav"
            )
        except (OSError, ValueError, KeyError) as err:
            raise ConvertError(
                f"{path}: LeRobot cannot load the frame table in data/ ({type(err).__name__}: "
                f"{err}); a parquet file is damaged: restore data/ from a complete copy"
            ) from err
        self._frames = dataset.hf_dataset.with_format("numpy")  # images decoded as arrays
        self._columns: dict[tuple[str, ...], Any] = {}
        self.info = SourceInfo(
            format="lerobot",
            path=path,
            lengths=lengths,
            keys=_source_keys(meta.features),
            files=files,
            fps=float(meta.fps),
            task=_first_task(meta),
            robot=meta.robot_type,
            attrs={"info": _jsonable(meta.info)},
            record=read_record(_read_text(path / RECORD_FILE)),
        )

    def read(self, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        start = int(self._episodes["dataset_from_index"][index])
        stop = int(self._episodes["dataset_to_index"][index])
        columns = tuple(k for k in keys if k not in self._video_keys) + _BOOKKEEPING
        rows = self._rows(columns, start, stop)
        if not np.array_equal(rows["index"], np.arange(start, stop)) or np.any(
            rows["episode_index"] != index
        ):
            raise ConvertError(
                f"{self.info.path}: the frames of episode {index} are not at rows "
                f"[{start}, {stop}) of data/ as meta/episodes says; the dataset's index is "
                "inconsistent: rebuild it"
            )
        episode = {key: np.asarray(rows[key]) for key in columns if key not in _BOOKKEEPING}
        for key in keys:
            if key in self._video_keys:
                episode[key] = self._decode(key, index, stop - start)
        return episode

    def _rows(self, columns: tuple[str, ...], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)``: numeric columns straight from Arrow (several times faster
        than the numpy formatter), image columns decoded by ``datasets``."""
        images = tuple(c for c in columns if self.info.keys.get(c, _PLAIN).image)
        plain = tuple(c for c in columns if c not in images)
        if plain not in self._columns:
            self._columns[plain] = self._frames.select_columns(list(plain)).with_format("arrow")
        table = self._columns[plain][start:stop]
        rows = {
            name: _arrow_to_numpy(table.column(name)).reshape(
                stop - start, *self.info.keys.get(name, _PLAIN).shape
            )
            for name in plain
        }
        if images:
            if images not in self._columns:
                self._columns[images] = self._frames.select_columns(list(images))
            rows.update(self._columns[images][start:stop])
        return rows

    def _decode(self, key: str, index: int, length: int) -> np.ndarray:
        path = self.info.path / video_file_path(self._meta, self._episodes, index, key)
        start = float(self._episodes[f"videos/{key}/from_timestamp"][index])
        return decode_video(path, start, length, tolerance_s=0.5 / self._meta.fps)

    def name(self, index: int) -> str:
        return f"episode {index}"


def _arrow_to_numpy(column: Any) -> np.ndarray:
    """The flat values of a numeric Arrow column (scalars or fixed-size lists, nested)."""
    array = column.combine_chunks()
    while hasattr(array.type, "list_size"):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False)


def _check_episode_index(path: Path, episodes: Mapping[str, np.ndarray], total: int) -> np.ndarray:
    """Episodes 0..E-1, each starting where the previous one ended; returns the lengths."""
    index = np.asarray(episodes["episode_index"], dtype=np.int64)
    if not np.array_equal(index, np.arange(len(index))) or len(index) != total:
        missing = sorted(set(range(max(total, int(index.max(initial=-1)) + 1))) - set(index))
        raise ConvertError(
            f"{path}: meta/episodes has episode indices {index.tolist()[:10]}... with gaps "
            f"(missing {missing[:10]}) against total_episodes={total} in meta/info.json; the "
            "metadata is damaged: restore meta/ from a complete copy"
        )
    start = np.asarray(episodes["dataset_from_index"], dtype=np.int64)
    stop = np.asarray(episodes["dataset_to_index"], dtype=np.int64)
    lengths = stop - start
    bad = np.flatnonzero((lengths <= 0) | (start != np.concatenate([[0], stop[:-1]])))
    if len(bad):
        raise ConvertError(
            f"{path}: episode {int(bad[0])} spans frames [{int(start[bad[0]])}, "
            f"{int(stop[bad[0]])}) in meta/episodes, not right after the previous episode; "
            "the metadata is damaged: restore meta/ from a complete copy"
        )
    return lengths


def _check_files(path: Path, meta: Any, episodes: Mapping[str, np.ndarray]) -> list[Path]:
    """Every data and video file is on disk and each parquet file holds its episodes' rows."""
    import pyarrow.parquet as pq

    expected: dict[Path, int] = {}
    holders: dict[Path, list[int]] = {}
    for ep in range(len(episodes["episode_index"])):
        data_file = path / data_file_path(meta, episodes, ep)
        rows = int(episodes["dataset_to_index"][ep] - episodes["dataset_from_index"][ep])
        expected[data_file] = expected.get(data_file, 0) + rows
        holders.setdefault(data_file, []).append(ep)
        for key in meta.video_keys:
            holders.setdefault(path / video_file_path(meta, episodes, ep, key), []).append(ep)
    for file, eps in holders.items():
        if not file.is_file():
            raise ConvertError(
                f"{file}: missing; it holds episodes {eps[:10]}{'...' if len(eps) > 10 else ''} "
                f"of {path}: restore it from a complete copy (or convert max_episodes={eps[0]})"
            )
    for file, rows in expected.items():
        try:
            found = pq.read_metadata(file).num_rows
        except (OSError, ValueError) as err:
            raise ConvertError(
                f"{file}: not a readable parquet file ({err}); it holds episodes "
                f"{holders[file][:10]} of {path}: restore it from a complete copy"
            ) from err
        if found != rows:
            raise ConvertError(
                f"{file}: holds {found} frames but meta/episodes puts {rows} there (episodes "
                f"{holders[file][:10]}); data and metadata disagree: restore a complete copy"
            )
    meta_files = sorted(p for p in (path / "meta").rglob("*") if p.is_file())
    return sorted(holders) + meta_files


def data_file_path(meta: Any, episodes: Mapping[str, np.ndarray], ep: int) -> str:
    """``meta.get_data_file_path`` from columns already in memory (it reads a row per call)."""
    chunk, file = (int(episodes[f"data/{n}_index"][ep]) for n in ("chunk", "file"))
    return meta.data_path.format(chunk_index=chunk, file_index=file)


def video_file_path(meta: Any, episodes: Mapping[str, np.ndarray], ep: int, key: str) -> str:
    chunk, file = (int(episodes[f"videos/{key}/{n}_index"][ep]) for n in ("chunk", "file"))
    return meta.video_path.format(video_key=key, chunk_index=chunk, file_index=file)


def _source_keys(features: Mapping[str, Mapping[str, Any]]) -> dict[str, SourceKey]:
    keys = {}
    for name, feature in features.items():
        dtype = feature["dtype"]
        image = dtype in ("image", "video")
        shape = tuple(int(s) for s in feature["shape"])
        if image and feature.get("names") and list(feature["names"])[0] == "channels":
            shape = (*shape[1:], shape[0])  # some datasets declare images channel-first
        if not image and shape == (1,):
            shape = ()  # LeRobot scalars are declared (1,) and read back as [T]
        keys[name] = SourceKey("uint8" if image else dtype, shape, image)
    return keys


def _first_task(meta: Any) -> str | None:
    tasks = getattr(meta, "tasks", None)
    return str(tasks.index[0]) if tasks is not None and len(tasks) else None


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: list(v) if hasattr(v, "__iter__") else str(v))
    )


def decode_video(path: Path, start_s: float, length: int, tolerance_s: float) -> np.ndarray:
    """``length`` RGB frames ``[T, H, W, 3]`` uint8 from ``start_s`` on, in one decoding pass."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(max(0.0, start_s) / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.pts is None or float(frame.pts * stream.time_base) < start_s - tolerance_s:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == length:
                    break
    except av.error.FFmpegError as err:
        raise ConvertError(f"{path}: cannot decode ({err}); the video is damaged") from err
    if len(frames) != length:
        raise ConvertError(
            f"{path}: holds {len(frames)} frames from {start_s:.3f} s, the episode needs "
            f"{length}; the video is truncated: restore it from a complete copy"
        )
    return np.stack(frames)


class LeRobotWriter(EpisodeWriter):
    def __init__(self, dest: Destination, options: ConvertOptions) -> None:
        if dest.path.exists() and not options.overwrite:
            raise ConvertError(
                f"{dest.path}: exists; choose a new folder or pass overwrite=true to replace it"
            )
        if float(dest.fps) != int(dest.fps):
            raise ConvertError(
                f"{dest.path}: LeRobot datasets need an integer fps, the source runs at "
                f"{dest.fps} Hz; pass fps=<integer Hz> if that is what it means"
            )
        self._lerobot = import_lerobot_datasets()
        _quiet_datasets()
        self._dest = dest
        self._videos = options.videos
        self._repo_id = options.repo_id or f"robot_rl/{dest.path.name}"
        self._tmp = dest.path.with_name(f".{dest.path.name}.writing-{uuid.uuid4().hex[:8]}")
        self._dataset: Any = None
        self._success: list[bool] = []
        self._store_keys: list[str] = []
        self._warned_timestamps = False

    def _create(self, episode: Mapping[str, np.ndarray]) -> None:
        features = {}
        for key, value in episode.items():
            if key == "timestamp":
                continue  # LeRobot's own timestamp column
            if K.is_image_key(key):
                dtype, names = (
                    ("video" if self._videos else "image"),
                    ["height", "width", "channels"],
                )
            else:
                dtype, names = str(value.dtype), None
            features[lerobot_name(key)] = {
                "dtype": dtype,
                "shape": tuple(int(s) for s in value.shape[1:]) or (1,),
                "names": names,
            }
        self._dest.path.parent.mkdir(parents=True, exist_ok=True)
        self._dataset = self._lerobot.LeRobotDataset.create(
            self._repo_id,
            fps=int(self._dest.fps),
            features=features,
            root=self._tmp,
            robot_type=self._dest.robot,
            use_videos=self._videos,
            video_backend="pyav",
        )
        self._store_keys = sorted(episode)

    def append(self, episode: Mapping[str, np.ndarray], success: bool) -> None:
        if self._dataset is None:
            self._create(episode)
        columns = {
            lerobot_name(key): value if value.ndim > 1 else value[:, None]
            for key, value in episode.items()
            if key != "timestamp"
        }
        length = len(next(iter(episode.values())))
        self._check_timestamps(episode.get("timestamp"), length)
        for t in range(length):
            frame: dict[str, Any] = {name: value[t] for name, value in columns.items()}
            self._dataset.add_frame({**frame, "task": self._dest.task})
        with warnings.catch_warnings():  # LeRobot's statistics of bool features say so per episode
            warnings.filterwarnings("ignore", "Converting input from bool", RuntimeWarning)
            self._dataset.save_episode()
        self._success.append(bool(success))

    def _check_timestamps(self, stamps: np.ndarray | None, length: int) -> None:
        """LeRobot derives every timestamp from frame_index / fps; say so once if the store's
        recorded ones differ (they are then not exported)."""
        if stamps is None or self._warned_timestamps:
            return
        derived = np.arange(length) / self._dest.fps
        deviation = float(np.max(np.abs(np.asarray(stamps, np.float64) - derived)))
        if deviation > TIMESTAMP_TOLERANCE_S:
            self._warned_timestamps = True
            warnings.warn(
                f"{self._dest.path}: the store's timestamps differ from frame_index / fps by up "
                f"to {deviation:.4f} s; LeRobot keeps only frame_index / fps",
                stacklevel=2,
            )

    def finish(self) -> None:
        if self._dataset is None:
            raise ConvertError(f"{self._dest.path}: no episode to write; the source is empty")
        self._dataset.finalize()
        record = {**self._dest.record(self._store_keys), "episode_success": self._success}
        (self._tmp / RECORD_FILE).write_text(json.dumps(record))
        if self._dest.path.exists():
            shutil.rmtree(self._dest.path)
        self._tmp.rename(self._dest.path)

    def abort(self) -> None:
        if self._dataset is not None:
            self._dataset.finalize()
        shutil.rmtree(self._tmp, ignore_errors=True)
