"""Helpers shared by the episode-store tests (imported by name: tests/data is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STORE_META = {"task": "push", "fps": 10.0, "source": "expert", "robot": "sim_arm"}


def make_episode(index: int, length: int, image: bool = False) -> dict[str, np.ndarray]:
    """Episode ``index`` of ``length`` steps; its content is a function of (index, length)."""
    rng = np.random.default_rng(1000 + index)
    episode = {
        "state": rng.normal(size=(length, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(length, 2)).astype(np.float32),
        "reward": rng.normal(size=length).astype(np.float32),
        "is_success": np.zeros(length, dtype=bool),
        "terminated": np.zeros(length, dtype=bool),
    }
    if index % 2 == 0:  # even episodes succeed and terminate
        episode["is_success"][-1] = True
        episode["terminated"][-1] = True
    if image:
        episode["image.front"] = rng.integers(0, 256, size=(length, 6, 5, 3), dtype=np.uint8)
    return episode


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a store (except the lock) by relative path: "unchanged" means equal."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".writer.lock"
    }
