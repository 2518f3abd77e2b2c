"""Bad episodes and damaged stores: a StoreError that names the problem, and no change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from store_helpers import STORE_META, make_episode, snapshot

from robot_rl.data import EpisodeStore, StoreError


def _bad(mutate):
    episode = make_episode(7, 6, image=True)
    mutate(episode)
    return episode


def _set(key, value):
    return lambda episode: episode.__setitem__(key, value)


def _nan_at(key, frame, value=np.nan):
    def mutate(episode):
        episode[key][frame] = value

    return mutate


BAD_EPISODES = {
    "missing key": (lambda e: e.pop("reward"), r"Missing: \['reward'\]"),
    "extra key": (_set("velocity", np.zeros((6, 2), np.float32)), r"extra: \['velocity'\]"),
    "length mismatch": (_set("action", np.zeros((5, 2), np.float32)), "disagree.*'action': 5"),
    "float image": (_set("image.front", np.zeros((6, 6, 5, 3), np.float32)), "'image.front'"),
    "int flag": (_set("is_success", np.zeros(6, np.int64)), "'is_success' has dtype int64"),
    "state width": (_set("state", np.zeros((6, 5), np.float32)), "'state' has feature shape"),
    "image size": (_set("image.front", np.zeros((6, 7, 5, 3), np.uint8)), "'image.front'"),
    "not rgb": (_set("image.front", np.zeros((6, 6, 5, 4), np.uint8)), r"\[T, H, W, 3\]"),
    "rank": (_set("reward", np.zeros((6, 1), np.float32)), "'reward' has shape"),
    "nan action": (_nan_at("action", 2), "'action' has NaN or inf at frame 2"),
    "inf state": (_nan_at("state", 0, np.inf), "'state' has NaN or inf at frame 0"),
    "strings": (_set("note", np.array(["a"] * 6)), "'note' has dtype"),
    "bad name": (_set("a/b", np.zeros(6, np.float32)), "'a/b' is not a valid name"),
}


@pytest.mark.parametrize("name", sorted(BAD_EPISODES))
def test_bad_episode_is_rejected_and_store_unchanged(filled_store, name):
    path, _ = filled_store
    mutate, message = BAD_EPISODES[name]
    before = snapshot(path)
    with EpisodeStore.open(path, mode="a") as store:
        with pytest.raises(StoreError, match=message) as info:
            store.append_episode(_bad(mutate))
        assert "episode 3" in str(info.value)
        assert store.n_episodes == 3
    assert snapshot(path) == before


def test_empty_and_non_dict_episodes(filled_store):
    path, _ = filled_store
    before = snapshot(path)
    with EpisodeStore.open(path, mode="a") as store:
        empty = {key: value[:0] for key, value in make_episode(0, 3, image=True).items()}
        with pytest.raises(StoreError, match="empty"):
            store.append_episode(empty)
        with pytest.raises(StoreError, match="non-empty dict"):
            store.append_episode({})
        with pytest.raises(StoreError, match="scalar"):
            store.append_episode({**make_episode(0, 3, image=True), "reward": np.float32(1)})
        store.append_episode(make_episode(3, 2, image=True))  # still appendable afterwards
    after = EpisodeStore.open(path)
    assert after.n_episodes == 4 and before != snapshot(path)


def test_bad_first_episode_creates_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, **STORE_META).close()
    before = snapshot(path)
    with EpisodeStore.open(path, mode="a") as store:
        with pytest.raises(StoreError, match="'action' has NaN"):
            store.append_episode(_bad(_nan_at("action", 4)))
    assert snapshot(path) == before


# ---------------------------------------------------------------- damaged or foreign stores


def test_open_missing_path_or_foreign_directory(tmp_path):
    with pytest.raises(StoreError, match="no episode store"):
        EpisodeStore.open(tmp_path / "nothing_here")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.csv").write_text("1,2\n")
    with pytest.raises(StoreError, match="EpisodeStore.create"):
        EpisodeStore.open(tmp_path / "foreign", mode="a")
    assert not (tmp_path / "foreign" / ".writer.lock").exists()
    zarr.create_group(tmp_path / "plain.zarr", attributes={"hello": 1})
    with pytest.raises(StoreError, match="not a robot_rl episode store"):
        EpisodeStore.open(tmp_path / "plain.zarr")


def test_newer_format_version(filled_store):
    path, _ = filled_store
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format 99.*upgrade robot_rl") as info:
        EpisodeStore.open(path)
    assert str(path) in str(info.value)


def _damage_ends(values):
    def damage(path):
        ends = zarr.open_array(path / "meta" / "episode_ends", mode="r+")
        ends.resize((len(values),))
        ends[:] = values

    return damage


def _remove(relative):
    def damage(path):
        target = path / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


DAMAGE = {
    "missing chunk": (_remove("data/state/c/0/0"), "data/state lacks 1 chunk file"),
    "missing image chunk": (_remove("data/image.front/c/0/0/0/0"), "data/image.front lacks"),
    "missing array metadata": (_remove("data/action/zarr.json"), "'data/action'"),
    "missing array": (_remove("data/reward"), "'data/reward'"),
    "missing ends": (_remove("meta/episode_ends"), "'meta/episode_ends'"),
    "missing ends chunk": (_remove("meta/episode_ends/c/0"), "episode_ends lacks 1 chunk"),
    "missing success": (_remove("meta/episode_success/c/0"), "episode_success lacks"),
    "decreasing ends": (_damage_ends([5, 3, 15]), "not strictly increasing.*episode 1"),
    "ends beyond data": (_damage_ends([5, 8, 20]), "has 15 rows but episode_ends needs 20"),
    "hole in ends": (_damage_ends([5, -1, 15]), "unpublished entry at episode 1"),
    "zero first end": (_damage_ends([0, 8, 15]), "episode 0 ends at 0"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
@pytest.mark.parametrize("mode", ["r", "a"])
def test_damaged_store_raises_and_is_left_alone(filled_store, name, mode):
    path, _ = filled_store
    damage, message = DAMAGE[name]
    damage(path)
    before = snapshot(path)
    with pytest.raises(StoreError, match=message) as info:
        EpisodeStore.open(path, mode=mode)
    assert str(path) in str(info.value)
    assert "restore" in str(info.value) or "rebuild" in str(info.value)
    assert snapshot(path) == before  # a writer does not "repair" damage it cannot explain


def test_corrupt_chunk_bytes_fail_on_read_and_validate(filled_store):
    path, _ = filled_store
    chunk = path / "data" / "state" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-7] + b"garbage")
    store = EpisodeStore.open(path)  # the file exists: caught when read
    with pytest.raises(StoreError, match="data/state rows"):
        store.read("state")
    with pytest.raises(StoreError, match="damaged"):
        store.validate()
    np.testing.assert_array_equal(store.read("action").shape, (15, 2))  # other keys still read
