"""Streaming min / max / mean / std of a stored key, for normalisation.

Data is read block by block (a few chunks at a time), so an image key never has to fit in
memory. Float data is merged with Chan et al.'s parallel update of (count, mean, M2), which
avoids the cancellation of sum-of-squares formulas; uint8 camera frames are counted into a
per-channel histogram, which is exact and much faster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """Count, mean, sum of squared deviations (M2), min and max per channel; mergeable."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def merge(self, other: Moments) -> Moments:
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return Moments(
            count, mean, m2, np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        )

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        return np.sqrt(np.maximum(self.m2 / self.count, 0.0))


def block_moments(values: np.ndarray) -> Moments:
    """values ``[C, n]`` float64, contiguous -> moments over n (reducing the contiguous axis
    is several times faster than reducing axis 0 of ``[n, C]`` when C is small)."""
    mean = values.mean(axis=1)
    return Moments(
        count=values.shape[1],
        mean=mean,
        m2=((values - mean[:, None]) ** 2).sum(axis=1),
        low=values.min(axis=1),
        high=values.max(axis=1),
    )


def feature_stats(
    read_rows: Callable[[int, int], np.ndarray],
    n_rows: int,
    block_rows: int,
    per_channel: bool,
) -> dict[str, np.ndarray]:
    """Statistics over the first axis (and, for images, over pixels) of ``[N, *feature]``.

    ``read_rows(start, stop)`` returns rows ``[start, stop)``. Returns float32 ``min``, ``max``,
    ``mean``, ``std`` (population, ddof=0) of shape ``feature`` (``[C]`` when ``per_channel``:
    everything but the last axis is reduced, e.g. ``[N, H, W, 3] -> [3]``).
    """
    if n_rows <= 0:
        raise ValueError("no published frames to compute statistics over; append an episode")
    total: Moments | None = None
    histogram: np.ndarray | None = None
    feature_shape: tuple[int, ...] = ()
    for start in range(0, n_rows, block_rows):
        block = np.asarray(read_rows(start, min(n_rows, start + block_rows)))
        feature_shape = block.shape[-1:] if per_channel else block.shape[1:]
        flat = block.reshape(-1, int(np.prod(feature_shape, dtype=np.int64)))
        if block.dtype == np.uint8 and per_channel:
            # Camera frames: a per-channel histogram is exact and ~10x faster than moments.
            channels = range(flat.shape[1])
            counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in channels])
            histogram = counts if histogram is None else histogram + counts
            continue
        moments = block_moments(np.ascontiguousarray(flat.T, dtype=np.float64))
        total = moments if total is None else total.merge(moments)
    if histogram is not None:
        total = _histogram_moments(histogram)
    assert total is not None
    std = np.sqrt(np.maximum(total.m2 / total.count, 0.0))
    return {
        name: np.asarray(value, dtype=np.float32).reshape(feature_shape)
        for name, value in (
            ("min", total.low),
            ("max", total.high),
            ("mean", total.mean),
            ("std", std),
        )
    }


def _histogram_moments(counts: np.ndarray) -> Moments:
    """counts ``[C, 256]`` of uint8 values -> moments per channel."""
    values = np.arange(counts.shape[1], dtype=np.float64)
    count = counts.sum(axis=1)
    mean = counts @ values / count
    m2 = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1)
    present = counts > 0
    low = np.argmax(present, axis=1).astype(np.float64)
    high = (counts.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)).astype(np.float64)
    return Moments(int(count[0]), mean, m2, low, high)
