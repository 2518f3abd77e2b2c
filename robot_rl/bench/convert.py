"""Conversion suite: lossless round trips, a 1,000,000-frame conversion's speed and peak memory
beside LeRobot's own loading speed, and corrupt inputs.

``python -m robot_rl.bench convert --out FILE.json [frames=1000000 episode_length=1000]``

- Round trips store -> LeRobot -> store and store -> HDF5 -> store must reproduce every array
  bit for bit (images in image mode), on our own stores and on datasets made by
  ``LeRobotDataset.create`` and by h5py in robomimic's layout (checked against the arrays
  those tools were given).
- The large conversion runs LeRobot -> store in a subprocess, whose peak RSS is measured. Its
  source is a synthetic state-only LeRobot v3 dataset: metadata written through LeRobot's
  ``LeRobotDatasetMetadata`` API, frames written as parquet in LeRobot's schema directly (at
  LeRobot's own ~1,000 frames/s, writing a million frames through ``add_frame`` would take
  about 20 minutes), then opened by ``LeRobotDataset``, which checks it, to time LeRobot's
  own per-frame loading on the same data.
- Each corrupt input must fail with a ConvertError naming the file and episode, and leave no
  partial episode in the destination.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data import EpisodeStore
from robot_rl.data.convert import ConvertError, ConvertOptions, convert
from robot_rl.data.convert.samples import (
    store_differences,
    write_lerobot_sample,
    write_replay_buffer_sample,
    write_robomimic_sample,
    write_store_sample,
)

QUIET = ConvertOptions(progress=False)
STATE_DIM, ACTION_DIM = 10, 4
LOAD_SAMPLE_FRAMES = 20_000


def run(overrides: list[str]) -> dict:
    settings = {"frames": 1_000_000, "episode_length": 1000, **_parse(overrides)}
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_convert_") as tmp:
        root = Path(tmp)
        figures: dict[str, Any] = {}
        figures.update(round_trips(root / "roundtrip"))
        figures.update(corrupt_inputs(root / "corrupt"))
        figures.update(large_conversion(root / "large", **settings))
        figures.update(export_speed(root / "export"))
    return figures


def _parse(overrides: list[str]) -> dict[str, int]:
    parsed = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in ("frames", "episode_length"):
            raise ValueError(f"unknown override {item!r}; use frames=N episode_length=N")
        parsed[key] = int(value)
    return parsed


# ---------------------------------------------------------------- round trips


def round_trips(root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    checks = {
        "store_lerobot_store": _store_round_trip(root / "ours", "export_lerobot"),
        "store_hdf5_store": _store_round_trip(root / "ours_h5", "export.hdf5"),
        "lerobot_create_import_and_round_trip": _lerobot_made(root / "lerobot"),
        "robomimic_h5py_import_and_round_trip": _robomimic_made(root / "robomimic"),
        "diffusion_policy_import": _replay_buffer_made(root / "dp"),
    }
    return {
        "roundtrip_lerobot_exact": all(
            checks[k] == [] for k in ("store_lerobot_store", "lerobot_create_import_and_round_trip")
        ),
        "roundtrip_hdf5_exact": all(
            checks[k] == [] for k in ("store_hdf5_store", "robomimic_h5py_import_and_round_trip")
        ),
        "import_diffusion_policy_exact": checks["diffusion_policy_import"] == [],
        "roundtrip_differences": checks,
    }


def _store_round_trip(root: Path, export: str) -> list[str]:
    root.mkdir()
    write_store_sample(root / "a.zarr", lengths=(20, 7, 33, 1, 12))
    convert(root / "a.zarr", root / export, QUIET)
    convert(root / export, root / "b.zarr", QUIET)
    return store_differences(root / "a.zarr", root / "b.zarr")


def _compare(store_path: Path, source: list[dict], pairs: dict[str, str]) -> list[str]:
    """Store keys against the arrays a format's tool was given (cast to the store's dtype)."""
    store, found = EpisodeStore.open(store_path), []
    for i, episode in enumerate(source):
        got = store.get_episode(i)
        for store_key, source_keys in pairs.items():
            parts = [np.asarray(episode[k]).reshape(len(got[store_key]), -1) for k in source_keys]
            want = np.concatenate(parts, 1).reshape(got[store_key].shape)
            if not np.array_equal(got[store_key], want.astype(got[store_key].dtype)):
                found.append(f"episode {i} {store_key} differs from the source")
    return found


def _made_by_tool(root: Path, source: list[dict], src: Path, export: str, pairs: dict) -> list[str]:
    """source (made by the format's tool) -> store A, checked against what the tool was given;
    A -> the same format -> store B, which must equal A."""
    convert(src, root / "a.zarr", QUIET)
    found = _compare(root / "a.zarr", source, pairs)
    convert(root / "a.zarr", root / export, QUIET)
    convert(root / export, root / "b.zarr", QUIET)
    return found + store_differences(root / "a.zarr", root / "b.zarr")


def _lerobot_made(root: Path) -> list[str]:
    source = write_lerobot_sample(root / "source", lengths=(12, 5, 9))
    pairs = {
        "state": ["observation.state"],
        "action": ["action"],
        "image.top": ["observation.images.top"],
        "terminated": ["next.done"],
        "reward": ["next.reward"],
    }
    return _made_by_tool(root, source, root / "source", "export", pairs)


def _robomimic_made(root: Path) -> list[str]:
    root.mkdir()
    source = write_robomimic_sample(root / "source.hdf5", lengths=(12, 5, 9))
    pairs = {
        "state": ["obs/object", "obs/robot0_eef_pos", "obs/robot0_gripper_qpos"],
        "action": ["actions"],
        "image.agentview": ["obs/agentview_image"],
        "sim_state": ["states"],
    }
    return _made_by_tool(root, source, root / "source.hdf5", "export.hdf5", pairs)


def _replay_buffer_made(root: Path) -> list[str]:
    root.mkdir()
    source = write_replay_buffer_sample(root / "buffer.zarr", lengths=(12, 5, 9))
    convert(root / "buffer.zarr", root / "a.zarr", ConvertOptions(fps=10, progress=False))
    pairs = {
        "state": ["state"],
        "action": ["action"],
        "image.img": ["img"],
        "keypoint": ["keypoint"],
    }
    return _compare(root / "a.zarr", source, pairs)


# ---------------------------------------------------------------- corrupt inputs


def corrupt_inputs(root: Path) -> dict[str, Any]:
    """Each case: (make the source, options, words the error must hold, good episodes before)."""
    root.mkdir(parents=True)
    cases: dict[str, tuple[Callable[[Path], Path], ConvertOptions, list[str], int]] = {
        "truncated_hdf5": (_truncated_hdf5, QUIET, ["bad.hdf5", "truncated"], 0),
        "missing_parquet_file": (_missing_parquet, QUIET, ["file-000.parquet", "episodes [0"], 0),
        "lerobot_episode_index_gap": (_episode_gap, QUIET, ["meta/episodes", "missing [1]"], 0),
        "replay_buffer_episode_ends_gap": (
            _ends_gap, ConvertOptions(fps=10, progress=False), ["episode_ends", "episode 1"], 0
        ),
        "nan_action_hdf5": (_nan_hdf5, QUIET, ["bad.hdf5", "data/demo_2", "NaN"], 2),
        "nan_action_lerobot": (_nan_lerobot, QUIET, ["nan_lerobot", "episode 1", "NaN"], 1),
        "mismatched_lengths_hdf5": (_short_hdf5, QUIET, ["bad.hdf5", "data/demo_2", "object"], 2),
        "mismatched_lengths_replay_buffer": (
            _short_buffer, ConvertOptions(fps=10, progress=False), ["bad.zarr", "data/state"], 0
        ),
    }  # fmt: skip
    results, rejected, partial = {}, 0, 0
    for name, (make, options, words, good) in cases.items():
        case_dir = root / name
        case_dir.mkdir()
        src, dst = make(case_dir), case_dir / "out.zarr"
        try:
            convert(src, dst, options)
            message = "(no error)"
        except ConvertError as err:
            message = str(err)
        ok = all(word in message for word in words)
        left = _partial_episodes(dst, good)
        rejected += ok
        partial += left
        results[name] = {"rejected": ok, "partial_episodes_left": left, "error": message[:300]}
    return {
        "corrupt_inputs_tried": len(cases),
        "corrupt_inputs_rejected": rejected,
        "partial_episodes_left": partial,
        "corrupt_inputs": results,
    }


def _partial_episodes(dst: Path, good: int) -> int:
    """Episodes in ``dst`` beyond the ``good`` ones before the bad episode, or rows of one."""
    if not dst.exists():
        return 0
    import zarr

    store = EpisodeStore.open(dst)
    data = zarr.open_group(str(dst / "data"), mode="r")
    extra_rows = any(data[key].shape[0] != store.n_frames for key in store.keys)
    return max(0, store.n_episodes - good) + int(extra_rows)


def _truncated_hdf5(root: Path) -> Path:
    src = root / "bad.hdf5"
    write_robomimic_sample(src, lengths=(5, 3, 7, 4))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    return src


def _lerobot_copy(root: Path) -> Path:
    src = root / "lerobot"
    write_lerobot_sample(src, image=False)
    return src


def _missing_parquet(root: Path) -> Path:
    src = _lerobot_copy(root)
    (src / "data/chunk-000/file-000.parquet").unlink()
    return src


def _episode_gap(root: Path) -> Path:
    import pyarrow.parquet as pq

    src = _lerobot_copy(root)
    episodes = src / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes)
    pq.write_table(table.filter(np.asarray(table["episode_index"]) != 1), episodes)
    return src


def _ends_gap(root: Path) -> Path:
    import zarr

    src = root / "bad.zarr"
    write_replay_buffer_sample(src)
    zarr.open_group(str(src), mode="a")["meta/episode_ends"][:] = np.array([5, 3, 15])
    return src


def _nan_hdf5(root: Path) -> Path:
    write_robomimic_sample(root / "bad.hdf5", lengths=(5, 3, 7, 4), nan_demo=2)
    return root / "bad.hdf5"


def _nan_lerobot(root: Path) -> Path:
    write_lerobot_sample(root / "nan_lerobot", lengths=(4, 4, 4), image=False, nan_episode=1)
    return root / "nan_lerobot"


def _short_hdf5(root: Path) -> Path:
    write_robomimic_sample(root / "bad.hdf5", lengths=(5, 3, 7, 4), short_obs_demo=2)
    return root / "bad.hdf5"


def _short_buffer(root: Path) -> Path:
    import zarr

    src = root / "bad.zarr"
    write_replay_buffer_sample(src)
    zarr.open_group(str(src), mode="a")["data/state"].resize((14, 5))
    return src


# ---------------------------------------------------------------- a million frames


def large_conversion(root: Path, frames: int, episode_length: int) -> dict[str, Any]:
    """LeRobot -> store on ``frames`` state-only frames, in subprocesses (peak RSS each)."""
    root.mkdir(parents=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(root / "hf_cache"), "OMP_NUM_THREADS": "1"}
    source = root / "synthetic_lerobot"
    generated = _child(["generate", str(source), str(frames), str(episode_length)], env)
    converted = _child(["convert", str(source), str(root / "converted.zarr")], env)
    loaded = _child(["lerobot-load", str(source), str(LOAD_SAMPLE_FRAMES)], env)
    store = EpisodeStore.open(root / "converted.zarr")
    exact = bool(
        store.n_frames == frames
        and np.array_equal(store.read("state", [0, store.n_episodes - 1]), _synthetic_states(
            [0, store.n_episodes - 1], episode_length, frames))
    )  # fmt: skip
    rate, lerobot_rate = converted["report"]["frames_per_s"], loaded["frames_per_s"]
    return {
        "frames": frames,
        "episodes": store.n_episodes,
        "frames_per_s": rate,
        "lerobot_load_frames_per_s": lerobot_rate,
        "speed_ratio_vs_lerobot_load": rate / lerobot_rate,
        "peak_rss_mb": converted["peak_rss_mb"],
        "peak_rss_limit_mb": 1024,
        "large_conversion_exact": exact,
        "lerobot_dataset_open_s": loaded["open_s"],
        "synthetic_source_write_s": generated["wall_s"],
        "source_mb": sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 2**20,
    }


def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "robot_rl.bench.convert", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _synthetic_states(episodes: list[int], length: int, frames: int) -> np.ndarray:
    """The synthetic dataset's states are a function of the global frame index, so any part
    can be checked without keeping the whole in memory."""
    rows = [np.arange(e * length, min(frames, (e + 1) * length)) for e in episodes]
    index = np.concatenate(rows)[:, None]
    return (np.sin(index * 0.001 + np.arange(STATE_DIM)) * 10).astype(np.float32)


def write_synthetic_lerobot(root: Path, frames: int, episode_length: int) -> None:
    """A state-only LeRobot v3 dataset: metadata (info, tasks, episodes, stats) through
    ``LeRobotDatasetMetadata``; frames as parquet in LeRobot's arrow schema, one episode at a
    time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robot_rl.lerobot_compat import import_lerobot_datasets

    lerobot = import_lerobot_datasets()
    from lerobot.datasets.compute_stats import compute_episode_stats
    from lerobot.datasets.utils import get_hf_features_from_features

    features = {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    meta = lerobot.LeRobotDatasetMetadata.create(
        "bench/synthetic", fps=50, features=features, robot_type="synthetic", root=root,
        use_videos=False, metadata_buffer_size=100,
    )  # fmt: skip
    meta.save_episode_tasks(["synthetic"])
    schema = get_hf_features_from_features(meta.features).arrow_schema
    path = root / meta.data_path.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, schema=schema, compression="snappy") as writer:
        for episode, start in enumerate(range(0, frames, episode_length)):
            length = min(episode_length, frames - start)
            columns = {
                "observation.state": _synthetic_states([episode], episode_length, frames),
                "action": rng.uniform(-1, 1, (length, ACTION_DIM)).astype(np.float32),
                "next.reward": rng.normal(size=length).astype(np.float32),
                "next.done": np.arange(length) == length - 1,
                "timestamp": (np.arange(length) / meta.fps).astype(np.float32),
                "frame_index": np.arange(length),
                "episode_index": np.full(length, episode),
                "index": np.arange(start, start + length),
                "task_index": np.zeros(length, np.int64),
            }
            arrays = [_arrow_column(columns[f.name], f.type, pa) for f in schema]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            stats_input = {k: v.reshape(length, -1) for k, v in columns.items()}
            stats = compute_episode_stats(stats_input, meta.features)
            metadata = {  # the keys and order of LeRobotDataset._save_episode_data's
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
            }
            meta.save_episode(episode, length, ["synthetic"], stats, metadata)
    meta._close_writer()  # what LeRobotDataset.finalize does for the metadata


def _arrow_column(values: np.ndarray, arrow_type: Any, pa: Any) -> Any:
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.array(values, type=arrow_type)


def lerobot_load_rate(root: Path, n_frames: int) -> dict[str, float]:
    """LeRobot's own loading: ``LeRobotDataset(...)[i]`` over evenly spaced frames."""
    from robot_rl.lerobot_compat import import_lerobot_datasets

    lerobot = import_lerobot_datasets()
    start = time.perf_counter()
    dataset = lerobot.LeRobotDataset("bench/synthetic", root=root, video_backend="pyav")
    opened = time.perf_counter()
    index = np.linspace(0, len(dataset) - 1, n_frames).astype(int)
    for i in index:
        dataset[int(i)]
    wall = time.perf_counter() - opened
    return {"frames_per_s": n_frames / wall, "open_s": opened - start, "frames": len(dataset)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def export_speed(root: Path, lengths: tuple[int, ...] = (500,) * 10) -> dict[str, float]:
    """store -> LeRobot (LeRobot's add_frame / save_episode) and store -> HDF5 frames/s."""
    root.mkdir(parents=True)
    write_store_sample(root / "a.zarr", lengths=lengths, image=False)
    figures = {}
    for name, dst in (("lerobot", root / "export"), ("hdf5", root / "export.hdf5")):
        figures[f"export_{name}_frames_per_s"] = convert(root / "a.zarr", dst, QUIET)[
            "frames_per_s"
        ]
    shutil.rmtree(root)
    return figures


def _main(argv: list[str]) -> None:
    """Subprocess entry points of the large conversion, each printing one JSON line."""
    command, args = argv[0], argv[1:]
    start = time.perf_counter()
    if command == "generate":
        write_synthetic_lerobot(Path(args[0]), int(args[1]), int(args[2]))
        result: dict[str, Any] = {}
    elif command == "convert":
        result = {"report": convert(args[0], args[1], QUIET)}
    elif command == "lerobot-load":
        result = lerobot_load_rate(Path(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    result.update(wall_s=time.perf_counter() - start, peak_rss_mb=_peak_rss_mb())
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    _main(sys.argv[1:])
