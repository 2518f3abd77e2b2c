"""Fixtures for the episode-store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_helpers import STORE_META, make_episode

from robot_rl.data import EpisodeStore


@pytest.fixture
def filled_store(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """A closed store at ``tmp_path/store.zarr`` with 3 episodes (with a tiny camera)."""
    path = tmp_path / "store.zarr"
    episodes = [make_episode(i, length, image=True) for i, length in enumerate((5, 3, 7))]
    with EpisodeStore.create(path, **STORE_META) as store:
        for episode in episodes:
            store.append_episode(episode)
    return path, episodes
