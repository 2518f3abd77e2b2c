"""``robot-rl dataset check PATH``: is a dataset fit to learn from?

Works on an episode store and on every readable source format (through the same readers and
key mapping as a conversion), one episode at a time. Errors make the check fail; warnings
are reported. Checked:

- structure: a store's chunks and checksums (``EpisodeStore.validate``); a source's files,
  episode index and boundaries (checked when its reader opens);
- schema: every episode has the first one's keys, dtypes and shapes, and the store's
  contract (``state`` float32 [T, D], ``image.<cam>`` uint8 [T, H, W, 3], ...);
- values: NaN or inf in any float key; lengths that disagree within an episode;
- time: ``timestamp`` increasing by 1/fps within each episode (to a tolerance);
- ``terminated`` set before an episode's last frame (warning); actions outside the
  normalised range (warning).

The summary (episodes, frames, lengths, success rate if known, per-key statistics) is written
to ``summary.json`` with ``distributions.png`` (histograms of action and state dimensions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robot_rl.core import keys as K
from robot_rl.data.convert.formats import EpisodeReader, open_reader, source_format
from robot_rl.data.convert.keymap import ResolvedKeys, map_episode
from robot_rl.data.convert.options import CheckOptions, ConvertOptions
from robot_rl.data.convert.pipeline import read_episode, source_keys
from robot_rl.data.schema import KeySpec, StoreError, check_episode
from robot_rl.data.stats import Moments, block_moments
from robot_rl.data.store import EpisodeStore

_MAX_LISTED = 20  # issues of one kind listed before they are only counted
_PLOT_ROWS = 50_000  # frames per key kept (evenly spaced) for the histograms
_PLOT_DIMS = 8  # dimensions per key in the PNG


@dataclass
class _Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, message: str, error: bool = True) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= _MAX_LISTED:
            (self.errors if error else self.warnings).append(message)


class _KeySummary:
    """Streaming per-dimension statistics of one key, and an evenly spaced sample to plot."""

    def __init__(self, per_channel: bool) -> None:
        self.per_channel = per_channel
        self.moments: Moments | None = None
        self.sample: list[np.ndarray] = []
        self.stride = 1
        self.seen = 0

    def add(self, value: np.ndarray) -> None:
        flat = (
            value.reshape(-1, value.shape[-1])
            if self.per_channel
            else value.reshape(len(value), -1)
        )
        flat = flat.astype(np.float64)
        finite = flat[np.isfinite(flat).all(axis=1)]
        if len(finite):
            block = block_moments(np.ascontiguousarray(finite.T))
            self.moments = block if self.moments is None else self.moments.merge(block)
        if not self.per_channel:
            offset = (-self.seen) % self.stride
            self.sample.append(finite[offset :: self.stride])
            self.seen += len(flat)
            if sum(len(s) for s in self.sample) > 2 * _PLOT_ROWS:
                self.sample = [np.concatenate(self.sample)[::2]]
                self.stride *= 2

    def to_json(self) -> dict[str, Any]:
        if self.moments is None:
            return {"finite_frames": 0}
        m = self.moments
        return {
            name: np.round(value, 6).tolist()
            for name, value in (("min", m.low), ("max", m.high), ("mean", m.mean), ("std", m.std))
        }


def check_dataset(path: str | Path, options: CheckOptions | None = None) -> dict[str, Any]:
    """Check the dataset at ``path``; returns the summary with ``ok`` and its issues."""
    options = options or CheckOptions()
    path = Path(path)
    fmt = source_format(path, options.from_format)
    findings = _Findings()
    summary: dict[str, Any] = {"path": str(path), "format": fmt}
    convert_options = ConvertOptions(
        from_format=fmt, keys=options.keys, fps=options.fps, filter_key=options.filter_key
    )
    try:
        if fmt == "store":
            EpisodeStore.open(path).validate()  # chunk files, checksums, finite state/action
        reader = open_reader(fmt, path, convert_options)
    except StoreError as err:  # ConvertError too: the reader found the structure broken
        findings.add("structure", str(err))
        return _finish(summary, findings, {}, options, path)
    try:
        resolved = source_keys(reader, convert_options)
        fps = options.fps or (reader.info.record or {}).get("fps") or reader.info.fps
        summary.update(_scan(reader, resolved, fps, findings, options))
    finally:
        reader.close()
    return _finish(summary, findings, summary.pop("_stats"), options, path)


def _scan(
    reader: EpisodeReader,
    resolved: ResolvedKeys,
    fps: float | None,
    findings: _Findings,
    options: CheckOptions,
) -> dict[str, Any]:
    info = reader.info
    schema: dict[str, KeySpec] | None = None
    stats: dict[str, _KeySummary] = {}
    successes: list[bool] = []
    known = True
    for index in tqdm(range(len(info.lengths)), desc="check", disable=not options.progress):
        where = f"{info.path}: {reader.name(index)}"
        try:
            raw = read_episode(reader, index, resolved.source_keys, where)
            episode = map_episode(resolved, raw, None, where)
            arrays, _ = check_episode(episode, None, where)
        except StoreError as err:
            findings.add("episode", str(err))
            continue
        if schema is None:
            schema = {k: KeySpec(str(v.dtype), tuple(v.shape[1:])) for k, v in arrays.items()}
        _check_schema(arrays, schema, findings, where)
        _check_values(arrays, int(info.lengths[index]), fps, findings, options, where)
        for key, value in arrays.items():
            stats.setdefault(key, _KeySummary(per_channel=K.is_image_key(key))).add(value)
        flag = reader.success(index)
        if flag is None and K.IS_SUCCESS in arrays:
            flag = bool(arrays[K.IS_SUCCESS].any())
        known = known and flag is not None
        successes.append(bool(flag))
    lengths = info.lengths
    return {
        "episodes": int(len(lengths)),
        "frames": int(lengths.sum()),
        "episode_length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "max": int(lengths.max()),
        },
        "fps": fps,
        "success_rate": float(np.mean(successes)) if known and successes else None,
        "schema": {k: v.to_json() for k, v in (schema or {}).items()},
        "_stats": stats,
    }


def _check_schema(
    arrays: dict[str, np.ndarray], schema: dict[str, KeySpec], findings: _Findings, where: str
) -> None:
    for key in sorted(set(schema) | set(arrays)):
        if key not in arrays or key not in schema:
            findings.add("schema", f"{where}: key {key!r} is not in every episode")
            continue
        spec = KeySpec(str(arrays[key].dtype), tuple(arrays[key].shape[1:]))
        if spec != schema[key]:
            findings.add("schema", f"{where}: {key!r} is {spec}, the first episode's {schema[key]}")


def _check_values(
    arrays: dict[str, np.ndarray],
    length: int,
    fps: float | None,
    findings: _Findings,
    options: CheckOptions,
    where: str,
) -> None:
    for key, value in arrays.items():
        if len(value) != length:
            findings.add(
                "length", f"{where}: {key!r} has {len(value)} frames, the episode {length}"
            )
        if value.dtype.kind == "f":
            bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            if bad.any():
                frame = int(np.argmax(bad))
                findings.add("nan", f"{where}: {key!r} has NaN or inf at frame {frame}")
    if "timestamp" in arrays and fps:
        _check_timestamps(arrays["timestamp"], fps, findings, options, where)
    terminated = arrays.get(K.TERMINATED)
    if terminated is not None and terminated[:-1].any():
        frame = int(np.argmax(terminated))
        message = f"{where}: terminated at frame {frame}, before the last frame {length - 1}"
        findings.add("terminated", message, error=False)
    action = arrays.get(K.ACTION)
    if action is not None and action.dtype.kind == "f" and len(action):
        peak = float(np.nanmax(np.abs(action)))
        if peak > options.action_limit:
            message = (
                f"{where}: actions reach {peak:.3g}, outside [-{options.action_limit:g}, "
                f"{options.action_limit:g}]; convert with keys.action_norm=minmax to rescale"
            )
            findings.add("action_range", message, error=False)


def _check_timestamps(
    stamps: np.ndarray, fps: float, findings: _Findings, options: CheckOptions, where: str
) -> None:
    steps = np.diff(np.asarray(stamps, dtype=np.float64).reshape(-1))
    if len(steps) and np.any(steps <= 0):
        frame = int(np.argmax(steps <= 0)) + 1
        findings.add("timestamp", f"{where}: timestamp does not increase at frame {frame}")
        return
    deviation = np.abs(steps - 1.0 / fps)
    if len(deviation) and deviation.max() > options.timestamp_tolerance_s:
        frame = int(np.argmax(deviation)) + 1
        findings.add(
            "timestamp",
            f"{where}: timestamp step {steps[frame - 1]:.6f} s at frame {frame}, expected "
            f"1/fps = {1.0 / fps:.6f} s (tolerance {options.timestamp_tolerance_s} s)",
        )


def _finish(
    summary: dict[str, Any],
    findings: _Findings,
    stats: dict[str, _KeySummary],
    options: CheckOptions,
    path: Path,
) -> dict[str, Any]:
    out = Path(options.out or f"reports/dataset/{path.name.split('.')[0] or 'dataset'}")
    out.mkdir(parents=True, exist_ok=True)
    summary["keys"] = {key: s.to_json() for key, s in sorted(stats.items())}
    summary["ok"] = not findings.errors
    summary["errors"] = findings.errors
    summary["warnings"] = findings.warnings
    summary["issue_counts"] = findings.counts
    if stats:
        summary["png"] = str(plot_distributions(stats, out / "distributions.png", path.name))
    summary["summary_json"] = str(out / "summary.json")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def plot_distributions(stats: dict[str, _KeySummary], out: Path, title: str) -> Path:
    """Histograms of the first dimensions of ``action`` and ``state`` (and other low-dim keys)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in (K.ACTION, K.STATE) if k in stats and stats[k].sample]
    keys += [k for k in sorted(stats) if k not in keys and stats[k].sample][: max(0, 4 - len(keys))]
    rows = max(1, len(keys))
    fig, axes = plt.subplots(
        rows, _PLOT_DIMS, figsize=(2.2 * _PLOT_DIMS, 2.0 * rows), squeeze=False
    )
    for row, key in enumerate(keys):
        sample = np.concatenate(stats[key].sample)
        for col in range(_PLOT_DIMS):
            ax = axes[row, col]
            if col >= sample.shape[1]:
                ax.axis("off")
                continue
            ax.hist(sample[:, col], bins=50, color="tab:blue" if key == K.ACTION else "tab:green")
            ax.set_title(f"{key}[{col}]", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}: per-dimension distributions (first {_PLOT_DIMS} dims)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
