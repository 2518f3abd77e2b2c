"""Crash safety: an append that dies at any point leaves only whole episodes visible.

Crashes are simulated in-process (the commit or a data write raises) and for real: a child
process appends in a loop and is killed with SIGKILL at random moments while this process
reads along.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import STORE_META, make_episode, snapshot

import robot_rl
from robot_rl.data import EpisodeStore

HERE = Path(__file__).parent


class SimulatedCrash(RuntimeError):
    pass


def _raise(*_args, **_kwargs):
    raise SimulatedCrash("process died here")


def _assert_same_episodes(path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    store = EpisodeStore.open(path)
    assert store.n_episodes == len(episodes)
    for i, episode in enumerate(episodes):
        got = store.get_episode(i)
        for key, value in episode.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"episode {i} key {key}")
    store.validate()


def test_crash_before_commit_is_invisible_and_repaired(filled_store, monkeypatch):
    path, episodes = filled_store
    writer = EpisodeStore.open(path, mode="a")
    monkeypatch.setattr(EpisodeStore, "_publish", _raise)
    with pytest.raises(SimulatedCrash):
        writer.append_episode(make_episode(3, 40, image=True))
    writer.close()
    monkeypatch.undo()

    # On disk: the new rows and a reserved (-1) end entry exist, but nobody sees them.
    assert zarr.open_array(path / "data" / "state", mode="r").shape[0] == 55
    np.testing.assert_array_equal(
        zarr.open_array(path / "meta" / "episode_ends", mode="r")[:], [5, 8, 15, -1]
    )
    _assert_same_episodes(path, episodes)
    assert EpisodeStore.open(path).read("state").shape == (15, 4)

    with EpisodeStore.open(path, mode="a") as store:  # the writer trims the leftovers
        assert zarr.open_array(path / "data" / "state", mode="r").shape[0] == 15
        assert zarr.open_array(path / "meta" / "episode_ends", mode="r").shape == (3,)
        assert store.append_episode(make_episode(3, 4, image=True)) == 3
    _assert_same_episodes(path, [*episodes, make_episode(3, 4, image=True)])


def test_failed_data_write_then_retry_in_same_handle(filled_store, monkeypatch):
    path, episodes = filled_store
    original = zarr.core.array.AsyncArray.setitem

    async def failing_setitem(self, selection, value, prototype=None):
        if self.path == "data/reward":
            raise SimulatedCrash("disk full while writing data/reward")
        return await original(self, selection, value, prototype)

    with EpisodeStore.open(path, mode="a") as store:
        monkeypatch.setattr(zarr.core.array.AsyncArray, "setitem", failing_setitem)
        with pytest.raises(SimulatedCrash):
            store.append_episode(make_episode(3, 6, image=True))
        monkeypatch.undo()
        _assert_same_episodes(path, episodes)
        assert store.n_episodes == 3
        assert store.append_episode(make_episode(4, 9, image=True)) == 3  # retry works
    _assert_same_episodes(path, [*episodes, make_episode(4, 9, image=True)])


def test_crash_in_first_append_discards_its_schema(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    writer = EpisodeStore.create(path, **STORE_META)
    monkeypatch.setattr(EpisodeStore, "_publish", _raise)
    with pytest.raises(SimulatedCrash):
        writer.append_episode(make_episode(0, 5, image=True))
    writer.close()
    monkeypatch.undo()
    reader = EpisodeStore.open(path)
    assert (reader.n_episodes, reader.keys) == (0, ())
    with EpisodeStore.open(path, mode="a") as store:
        store.append_episode({"state": np.ones((2, 3), np.float32)})  # a different schema
    assert EpisodeStore.open(path).keys == ("state",)
    assert not (path / "data" / "image.front").exists()


def test_partial_temp_files_are_removed_by_the_writer(filled_store):
    path, episodes = filled_store
    leftover = path / "data" / "state" / "c" / "0.1234abcd.partial"
    leftover.write_bytes(b"half a chunk")
    _assert_same_episodes(path, episodes)  # readers ignore it
    EpisodeStore.open(path, mode="a").close()
    assert not leftover.exists()


_CHILD = """
import sys
from store_helpers import make_episode
from robot_rl.data import EpisodeStore

store = EpisodeStore.open(sys.argv[1], mode="a")
i = store.n_episodes
print("ready", flush=True)
while True:
    store.append_episode(make_episode(i, 20 + i % 7, image=True))
    i += 1
"""


def _expected(i: int) -> dict[str, np.ndarray]:
    return make_episode(i, 20 + i % 7, image=True)


def test_sigkill_during_appends_never_exposes_half_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, **STORE_META).close()
    repo_root = Path(robot_rl.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(repo_root)])}
    rng = np.random.default_rng(0)
    reader = EpisodeStore.open(path)
    seen = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert child.stdout.readline().strip() == b"ready"
            deadline = time.monotonic() + rng.uniform(0.1, 0.5)
            while time.monotonic() < deadline:  # read along while the child appends
                reader.refresh()
                assert reader.n_episodes >= seen
                seen = reader.n_episodes
                if seen:
                    last = reader.get_episode(seen - 1)
                    np.testing.assert_array_equal(
                        last["image.front"], _expected(seen - 1)["image.front"]
                    )
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        store = EpisodeStore.open(path)
        assert store.n_episodes >= seen
        seen = store.n_episodes
        before = snapshot(path)
        _assert_same_episodes(path, [_expected(i) for i in range(seen)])
        assert snapshot(path) == before  # reading changes nothing
    assert seen > 0
    with EpisodeStore.open(path, mode="a") as store:
        assert store.append_episode(_expected(seen)) == seen
    _assert_same_episodes(path, [_expected(i) for i in range(seen + 1)])
