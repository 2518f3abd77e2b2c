"""EpisodeStore round trips, metadata, statistics and the writer lifecycle."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import STORE_META, make_episode

from robot_rl.data import FORMAT_VERSION, EpisodeStore, StoreError


def test_round_trip_state_and_image(filled_store):
    path, episodes = filled_store
    store = EpisodeStore.open(path)
    assert store.n_episodes == 3
    assert store.n_frames == 15
    np.testing.assert_array_equal(store.episode_ends, [5, 8, 15])
    np.testing.assert_array_equal(store.episode_lengths, [5, 3, 7])
    assert store.episode_ends.dtype == np.int64
    assert store.keys == ("action", "image.front", "is_success", "reward", "state", "terminated")
    for i, episode in enumerate(episodes):
        got = store.get_episode(i)
        assert set(got) == set(episode)
        for key, value in episode.items():
            np.testing.assert_array_equal(got[key], value)
            assert got[key].dtype == value.dtype
    assert store.episode_slice(1) == slice(5, 8)
    assert store.episode_slice(-1) == slice(8, 15)
    np.testing.assert_array_equal(
        store.read("state"), np.concatenate([e["state"] for e in episodes])
    )
    np.testing.assert_array_equal(
        store.read("action", [2, 0]), np.concatenate([episodes[2]["action"], episodes[0]["action"]])
    )
    np.testing.assert_array_equal(store.episode_success, [True, False, True])
    store.validate()


def test_metadata(tmp_path):
    extra = {"camera_fov": 45, "notes": ["a", "b"]}
    with EpisodeStore.create(tmp_path / "s.zarr", extra=extra, **STORE_META) as store:
        meta = store.meta
    assert meta["format_version"] == FORMAT_VERSION
    for key, value in STORE_META.items():
        assert meta[key] == value
    assert meta["extra"] == extra
    assert meta["created"].endswith("+00:00")
    meta["task"] = "changed"  # a copy: the store's view is not mutated
    assert EpisodeStore.open(tmp_path / "s.zarr").meta["task"] == "push"


def test_success_flag_explicit_and_derived(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr", **STORE_META) as store:
        store.append_episode(make_episode(0, 4))  # is_success at the end -> True
        store.append_episode(make_episode(1, 4))  # never succeeds -> False
        store.append_episode(make_episode(1, 4), success=True)
    np.testing.assert_array_equal(
        EpisodeStore.open(tmp_path / "s.zarr").episode_success, [True, False, True]
    )
    with EpisodeStore.create(tmp_path / "no_flag.zarr", **STORE_META) as store:
        store.append_episode({"state": np.zeros((3, 2), np.float32)})  # no is_success: False
        assert not store.episode_success[0]


def test_stats_match_numpy_and_follow_appends(filled_store):
    path, episodes = filled_store
    store = EpisodeStore.open(path, mode="a")
    for key in ("state", "action", "reward"):
        values = np.concatenate([e[key] for e in episodes]).astype(np.float64)
        stats = store.stats(key)
        assert stats["mean"].dtype == np.float32
        np.testing.assert_allclose(stats["min"], values.min(0), rtol=1e-6)
        np.testing.assert_allclose(stats["max"], values.max(0), rtol=1e-6)
        np.testing.assert_allclose(stats["mean"], values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["std"], values.std(0), rtol=1e-5, atol=1e-6)
    pixels = np.concatenate([e["image.front"] for e in episodes]).reshape(-1, 3).astype(float)
    image = store.stats("image.front")
    assert image["mean"].shape == (3,)
    np.testing.assert_allclose(image["mean"], pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(image["std"], pixels.std(0), rtol=1e-6)
    np.testing.assert_array_equal(image["min"], pixels.min(0))
    np.testing.assert_array_equal(image["max"], pixels.max(0))

    before = store.stats("state")
    before["mean"][:] = 1e9  # callers get copies; the cache is not poisoned
    big = make_episode(9, 50, image=True)
    big["state"] += 100.0
    store.append_episode(big)
    after = store.stats("state")
    values = np.concatenate([e["state"] for e in [*episodes, big]]).astype(np.float64)
    np.testing.assert_allclose(after["mean"], values.mean(0), rtol=1e-5)
    with pytest.raises(KeyError, match="nope"):
        store.stats("nope")


def test_reopen_in_append_mode_and_append_more(filled_store):
    path, episodes = filled_store
    with EpisodeStore.open(path, mode="a") as store:
        assert store.append_episode(make_episode(3, 1200, image=True)) == 3  # crosses a chunk
        assert store.append_episode(make_episode(4, 2, image=True)) == 4
    store = EpisodeStore.open(path)
    np.testing.assert_array_equal(store.episode_ends, [5, 8, 15, 1215, 1217])
    np.testing.assert_array_equal(store.get_episode(3)["state"], make_episode(3, 1200)["state"])
    np.testing.assert_array_equal(store.get_episode(0)["image.front"], episodes[0]["image.front"])
    store.validate()


def test_reader_sees_new_episodes_after_refresh(filled_store):
    path, _ = filled_store
    reader = EpisodeStore.open(path)
    with EpisodeStore.open(path, mode="a") as writer:
        writer.append_episode(make_episode(5, 4, image=True))
    assert reader.n_episodes == 3  # a reader's view is fixed until refresh
    reader.refresh()
    assert reader.n_episodes == 4
    np.testing.assert_array_equal(reader.get_episode(3)["reward"], make_episode(5, 4)["reward"])


def test_one_writer_at_a_time(filled_store):
    path, _ = filled_store
    writer = EpisodeStore.open(path, mode="a")
    with pytest.raises(StoreError, match="another writer"):
        EpisodeStore.open(path, mode="a")
    EpisodeStore.open(path).get_episode(0)  # readers are never blocked
    writer.close()
    EpisodeStore.open(path, mode="a").close()


def test_read_only_handle_refuses_appends(filled_store):
    path, _ = filled_store
    with pytest.raises(StoreError, match="read-only"):
        EpisodeStore.open(path).append_episode(make_episode(0, 3, image=True))


def test_create_refuses_existing_path_unless_overwrite(filled_store, tmp_path):
    path, _ = filled_store
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(path, **STORE_META)
    assert EpisodeStore.open(path).n_episodes == 3
    with EpisodeStore.create(path, overwrite=True, **STORE_META) as store:
        assert store.n_episodes == 0
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeStore.create(other, overwrite=True, **STORE_META)
    assert (other / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    EpisodeStore.create(empty, **STORE_META).close()  # an empty directory is fine


@pytest.mark.parametrize(
    ("field", "value"), [("fps", 0), ("fps", float("nan")), ("task", ""), ("robot", None)]
)
def test_create_rejects_bad_metadata(tmp_path, field, value):
    kwargs = {**STORE_META, field: value}
    with pytest.raises(StoreError, match=field):
        EpisodeStore.create(tmp_path / "s.zarr", **kwargs)
    assert not (tmp_path / "s.zarr").exists()


def test_extra_must_be_json(tmp_path):
    with pytest.raises(StoreError, match="JSON"):
        EpisodeStore.create(tmp_path / "s.zarr", extra={"f": object()}, **STORE_META)


def test_empty_store_and_float64_input(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr", **STORE_META) as store:
        assert (store.n_episodes, store.n_frames, store.keys) == (0, 0, ())
        assert store.episode_ends.shape == (0,)
        episode = make_episode(0, 3)
        episode["state"] = episode["state"].astype(np.float64)  # converted, not rejected
        store.append_episode(episode)
        assert store.read("state").dtype == np.float32
    with pytest.raises(IndexError, match="out of range"):
        EpisodeStore.open(tmp_path / "s.zarr").get_episode(1)
