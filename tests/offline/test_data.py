import numpy as np
import pytest
from offline_helpers import toy_episode, toy_store
from toys import ToySteerable

from robot_rl.data import EpisodeStore, StoreError
from robot_rl.offline.data import build_chunk_data, sample_candidates

GAMMA = 0.9


def test_transitions_follow_the_h_step_backup(tmp_path):
    store = toy_store(tmp_path / "s.zarr", lengths=(5, 4), successes=(True, False))
    data = build_chunk_data([store], ToySteerable(), GAMMA, reward="sparse")
    assert len(data) == 9 and data.obs_dim == 4 and data.chunk_dim == 2  # To*D, h*A
    # frame 0 of episode 0: chunk a0 a1, no reward, next observation is frame 2
    assert data.next_frame[0] == 2 and data.reward[0] == 0
    assert data.discount[0] == pytest.approx(GAMMA**2)
    # frame 3: the chunk a3 a4 reaches the success at frame 4 after one step and terminates
    assert data.reward[3] == pytest.approx(GAMMA) and data.discount[3] == 0
    # frame 4 (last, terminal): a one-step chunk, its action repeated as padding
    assert data.action[4, 0] == data.action[4, 1] and data.discount[4] == 0
    # the failed episode is cut by time: its return ends there (chunks from frames 7 and 8
    # reach its last frame) ...
    assert data.discount[6] == pytest.approx(GAMMA**2)
    assert data.discount[7] == 0 and data.discount[8] == 0
    # ... or bootstraps from its last frame, as for an endless task
    endless = build_chunk_data([store], ToySteerable(), GAMMA, bootstrap_timeouts=True)
    assert endless.next_frame[8] == 8 and endless.discount[8] == pytest.approx(GAMMA)
    assert endless.discount[7] == pytest.approx(GAMMA**2)
    # Monte-Carlo returns to the episode's end, without bootstrap
    np.testing.assert_allclose(data.mc_return[:5], [GAMMA**4, GAMMA**3, GAMMA**2, GAMMA, 1])
    assert data.mc_return[5:].sum() == 0
    assert data.episode_success.tolist() == [True] * 5 + [False] * 4


def test_dense_rewards_come_from_the_store_and_the_model_relabels(tmp_path):
    store = toy_store(tmp_path / "s.zarr", lengths=(5, 4), successes=(True, False))
    dense = build_chunk_data([store], ToySteerable(), GAMMA, reward="dense")
    assert dense.reward[5] == pytest.approx(0.01 + GAMMA * 0.01)

    class ReachedX:
        required_keys = ("state",)

        def __call__(self, obs):
            return obs["state"][:, 0].astype(np.float32)

    from robot_rl.core.reward import RewardModel

    RewardModel.register(ReachedX)
    model = build_chunk_data(
        [store], ToySteerable(), GAMMA, reward="model", reward_model=ReachedX()
    )
    states = EpisodeStore.open(store).read("state")
    # step 0's reward is the model's score of the observation it reached, o(1)
    expected = states[1, 0] + GAMMA * states[2, 0]
    assert model.reward[0] == pytest.approx(expected, rel=1e-5)


def test_missing_rewards_fail_before_training_naming_the_store(tmp_path):
    store = toy_store(tmp_path / "norew.zarr", rewards=False)
    with pytest.raises(StoreError, match=r"reward='dense' needs per-step 'reward'.*norew\.zarr"):
        build_chunk_data([store], ToySteerable(), GAMMA, reward="dense")
    build_chunk_data([store], ToySteerable(), GAMMA, reward="sparse")  # is_success suffices


def test_a_chunk_longer_than_every_episode_is_refused(tmp_path):
    store = toy_store(tmp_path / "short.zarr", lengths=(1, 1), successes=(True, False))
    with pytest.raises(ValueError, match=r"longer than every episode.*short\.zarr.*1 steps"):
        build_chunk_data([store], ToySteerable(), GAMMA)


def test_stores_of_mixed_action_dimension_are_refused(tmp_path):
    first = toy_store(tmp_path / "a.zarr")
    second = EpisodeStore.create(tmp_path / "b.zarr", task="toy", fps=10, source="t", robot="s")
    second.append_episode(toy_episode(6, True, action_dim=2))
    second.close()
    with pytest.raises(StoreError, match=r"b\.zarr: 'action' has shape \(2,\).*a\.zarr has \(1,\)"):
        build_chunk_data([first, tmp_path / "b.zarr"], ToySteerable(), GAMMA)


def test_a_base_of_another_action_size_is_refused(tmp_path):
    store = EpisodeStore.create(tmp_path / "c.zarr", task="toy", fps=10, source="t", robot="s")
    store.append_episode(toy_episode(6, True, action_dim=3))
    store.close()
    with pytest.raises(ValueError, match="3-d actions.*base policy writes 1-d"):
        build_chunk_data([tmp_path / "c.zarr"], ToySteerable(), GAMMA)


def test_base_samples_are_seeded_executed_chunks(tmp_path):
    data = build_chunk_data([toy_store(tmp_path / "s.zarr")], ToySteerable(), GAMMA)
    a = sample_candidates(ToySteerable(), data.frame_obs, 5, seed=3, batch=8, progress=False)
    b = sample_candidates(ToySteerable(), data.frame_obs, 5, seed=3, progress=False)
    assert a.shape == (len(data), 5, 2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.abs().max() <= 1 and a.std() > 0.1


def test_fewer_sampling_steps_need_a_diffusion_base_before_any_work(tmp_path):
    from robot_rl.offline.config import ChunkedOfflineConfig
    from robot_rl.offline.pipeline import ChunkedOffline

    store = toy_store(tmp_path / "toy.zarr")
    cfg = ChunkedOfflineConfig(store=[str(store)])  # best_of_n.inference_steps defaults to 3
    with pytest.raises(TypeError, match=r"ToySteerable.*best_of_n\.inference_steps=null"):
        ChunkedOffline(ToySteerable(), cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing sampled, cached or written
