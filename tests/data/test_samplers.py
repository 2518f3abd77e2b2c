"""WindowSampler and ChunkTransitionSampler against hand-computed windows."""

from __future__ import annotations

import time

import numpy as np
import pytest
from store_helpers import STORE_META, make_episode

from robot_rl.data import ChunkTransitionSampler, EpisodeStore, StoreError, WindowSampler

# Two episodes: frames 0..3 and 4..5. state[i] = (i, 10 i), action[i] = 100 + i.
ENDS = np.array([4, 6])
ARRAYS = {
    "state": (np.arange(6)[:, None] * np.array([1.0, 10.0])).astype(np.float32),
    "action": (100.0 + np.arange(6))[:, None].astype(np.float32),
}


def _frames(batch_obs: np.ndarray) -> np.ndarray:
    """Recover frame indices from the state column that holds them."""
    return batch_obs[..., 0].astype(int)


def test_window_values_and_padding_at_both_edges():
    sampler = WindowSampler(ARRAYS, ["state"], n_obs_steps=3, horizon=5, episode_ends=ENDS)
    assert len(sampler) == 6
    batch = sampler.batch(np.array([1, 4, 3, 5, 0]))
    np.testing.assert_array_equal(
        _frames(batch["obs"]["state"]), [[0, 0, 1], [4, 4, 4], [1, 2, 3], [4, 4, 5], [0, 0, 0]]
    )
    np.testing.assert_array_equal(batch["obs"]["state"][0, 2], [1.0, 10.0])
    np.testing.assert_array_equal(
        batch["action"][..., 0] - 100,
        [[1, 2, 3, 3, 3], [4, 5, 5, 5, 5], [3, 3, 3, 3, 3], [5, 5, 5, 5, 5], [0, 1, 2, 3, 3]],
    )
    np.testing.assert_array_equal(
        batch["action_is_pad"],
        [
            [0, 0, 0, 1, 1],
            [0, 0, 1, 1, 1],
            [0, 1, 1, 1, 1],
            [0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1],
        ],
    )
    assert batch["action"].dtype == np.float32 and batch["action_is_pad"].dtype == bool


def test_shapes_with_a_camera_and_store_equals_arrays(filled_store):
    path, episodes = filled_store
    store = EpisodeStore.open(path)
    sampler = WindowSampler(store, ["state", "image.front"], n_obs_steps=2, horizon=4)
    batch = sampler.sample(8, np.random.default_rng(0))
    assert batch["obs"]["state"].shape == (8, 2, 4)
    assert batch["obs"]["image.front"].shape == (8, 2, 6, 5, 3)
    assert batch["obs"]["image.front"].dtype == np.uint8
    assert batch["action"].shape == (8, 4, 2)
    assert batch["action_is_pad"].shape == (8, 4)
    arrays = {key: np.concatenate([e[key] for e in episodes]) for key in episodes[0]}
    in_memory = WindowSampler(
        arrays, ["state", "image.front"], 2, 4, episode_ends=store.episode_ends
    )
    for a, b in zip(sampler.iter_batches(4), in_memory.iter_batches(4), strict=True):
        np.testing.assert_array_equal(a["obs"]["image.front"], b["obs"]["image.front"])
        np.testing.assert_array_equal(a["action"], b["action"])


def test_sampling_is_deterministic_given_the_rng():
    sampler = WindowSampler(ARRAYS, ["state"], 2, 3, episode_ends=ENDS)
    a = sampler.sample(32, np.random.default_rng(7))
    b = sampler.sample(32, np.random.default_rng(7))
    c = sampler.sample(32, np.random.default_rng(8))
    np.testing.assert_array_equal(a["obs"]["state"], b["obs"]["state"])
    np.testing.assert_array_equal(a["action"], b["action"])
    assert not np.array_equal(a["obs"]["state"], c["obs"]["state"])
    with pytest.raises(TypeError, match="default_rng"):
        sampler.sample(4, 7)


def test_iter_batches_visits_every_window_once_in_order():
    sampler = WindowSampler(ARRAYS, ["state"], 2, 2, episode_ends=ENDS)
    batches = list(sampler.iter_batches(4))
    assert [len(b["action"]) for b in batches] == [4, 2]
    frames = np.concatenate([_frames(b["obs"]["state"])[:, -1] for b in batches])
    np.testing.assert_array_equal(frames, np.arange(6))


def test_episode_subset_in_given_order(filled_store):
    sampler = WindowSampler(ARRAYS, ["state"], 2, 3, episode_ends=ENDS, episodes=[1])
    assert len(sampler) == 2 and sampler.n_episodes == 1
    np.testing.assert_array_equal(_frames(sampler.batch(np.array([0]))["obs"]["state"]), [[4, 4]])
    reordered = WindowSampler(ARRAYS, ["state"], 2, 3, episode_ends=ENDS, episodes=[1, 0])
    np.testing.assert_array_equal(reordered.episode_ends, [2, 6])
    np.testing.assert_array_equal(_frames(reordered.batch(np.array([2]))["obs"]["state"]), [[0, 0]])

    path, episodes = filled_store
    store = EpisodeStore.open(path)
    successes = np.flatnonzero(store.episode_success)  # episodes 0 and 2
    only_success = WindowSampler(store, ["state"], 1, 1, episodes=successes)
    assert len(only_success) == 5 + 7
    got = np.concatenate([b["obs"]["state"][:, 0] for b in only_success.iter_batches(100)])
    np.testing.assert_array_equal(got, np.concatenate([episodes[0]["state"], episodes[2]["state"]]))


def test_window_sampler_errors():
    with pytest.raises(StoreError, match=r"no \['velocity'\]"):
        WindowSampler(ARRAYS, ["velocity"], 1, 1, episode_ends=ENDS)
    with pytest.raises(ValueError, match="episode_ends"):
        WindowSampler(ARRAYS, ["state"], 1, 1)
    with pytest.raises(ValueError, match="n_obs_steps"):
        WindowSampler(ARRAYS, ["state"], 0, 1, episode_ends=ENDS)
    with pytest.raises(ValueError, match="horizon"):
        WindowSampler(ARRAYS, ["state"], 1, 0, episode_ends=ENDS)
    with pytest.raises(IndexError, match="out of range"):
        WindowSampler(ARRAYS, ["state"], 1, 1, episode_ends=ENDS, episodes=[2])
    with pytest.raises(ValueError, match="no episodes"):
        WindowSampler(ARRAYS, ["state"], 1, 1, episode_ends=ENDS, episodes=[])
    with pytest.raises(ValueError, match="6 frames but episode_ends ends at 5"):
        WindowSampler(ARRAYS, ["state"], 1, 1, episode_ends=np.array([4, 5]))


def test_state_window_sampling_is_fast(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr", **STORE_META) as store:
        for i in range(20):
            store.append_episode(make_episode(i, 100))
        sampler = WindowSampler(store, ["state"], n_obs_steps=2, horizon=16)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(40):
        sampler.sample(256, rng)
    rate = 40 * 256 / (time.perf_counter() - start)
    assert rate > 10_000, f"{rate:.0f} samples/s"


# ---------------------------------------------------------------- chunk transitions

# A: frames 0..4, terminates at its last frame. B: frames 5..7, cut by a time limit.
# C: frames 8..11, flagged terminated at its second frame (the chunk stops there).
T_ENDS = np.array([5, 8, 12])
T_ARRAYS = {
    "state": np.arange(12, dtype=np.float32)[:, None],
    "action": (100.0 + np.arange(12, dtype=np.float32))[:, None],
    "reward": np.array([1, 2, 3, 4, 5, 10, 20, 30, 1, 1, 1, 1], np.float32),
    "terminated": np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0], bool),
}


def test_chunk_transitions_on_hand_made_episodes():
    sampler = ChunkTransitionSampler(
        T_ARRAYS, ["state"], n_obs_steps=2, chunk_size=3, gamma=0.5, episode_ends=T_ENDS
    )
    assert len(sampler) == 12
    b = sampler.batch(np.array([0, 2, 3, 4, 5, 6, 8]))
    np.testing.assert_allclose(b["reward"], [2.75, 6.25, 6.5, 5.0, 27.5, 35.0, 1.5])
    np.testing.assert_array_equal(b["done"], [0, 1, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(b["n_steps"], [3, 3, 2, 1, 3, 2, 2])
    np.testing.assert_array_equal(
        _frames(b["obs"]["state"]), [[0, 0], [1, 2], [2, 3], [3, 4], [5, 5], [5, 6], [8, 8]]
    )
    # next_obs: history at t + n_steps, or at the episode's last frame when that runs past it.
    np.testing.assert_array_equal(
        _frames(b["next_obs"]["state"]), [[2, 3], [3, 4], [3, 4], [3, 4], [6, 7], [6, 7], [9, 10]]
    )
    np.testing.assert_array_equal(
        b["action"][..., 0] - 100,
        [[0, 1, 2], [2, 3, 4], [3, 4, 4], [4, 4, 4], [5, 6, 7], [6, 7, 7], [8, 9, 9]],
    )
    np.testing.assert_array_equal(
        b["action_is_pad"],
        [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 0, 0], [0, 0, 1], [0, 0, 1]],
    )
    assert b["reward"].dtype == np.float32 and b["n_steps"].dtype == np.int64


def test_chunk_transitions_from_a_store(filled_store):
    path, episodes = filled_store
    store = EpisodeStore.open(path)
    sampler = ChunkTransitionSampler(store, ["state", "image.front"], 2, 4, gamma=0.9)
    batch = sampler.sample(16, np.random.default_rng(0))
    assert batch["next_obs"]["image.front"].shape == (16, 2, 6, 5, 3)
    first = sampler.batch(np.array([0]))  # episode 0 has 5 frames, all steps valid
    expected = sum(0.9**i * episodes[0]["reward"][i] for i in range(4))
    np.testing.assert_allclose(first["reward"], [expected], rtol=1e-6)
    last = sampler.batch(np.array([4]))  # the terminal frame of episode 0
    assert last["done"][0] and last["n_steps"][0] == 1


def test_chunk_transition_errors(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr", **STORE_META) as store:
        store.append_episode({"state": np.zeros((3, 2), np.float32)})
        with pytest.raises(StoreError, match=r"no \['reward', 'terminated'\]"):
            ChunkTransitionSampler(store, ["state"], 1, 2, gamma=0.9)
    with pytest.raises(ValueError, match="longer than every selected episode.*longest: 5"):
        ChunkTransitionSampler(T_ARRAYS, ["state"], 1, 6, 0.9, episode_ends=T_ENDS)
    with pytest.raises(ValueError, match="gamma"):
        ChunkTransitionSampler(T_ARRAYS, ["state"], 1, 2, 1.5, episode_ends=T_ENDS)
