import numpy as np
import pytest
from toys import ToySteerable

from robot_rl.improvers.collectors import Transitions, VectorCollector
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import task_vector_env
from robot_rl.rl.sac import SACConfig


def _learner(**kw):
    cfg = DSRLConfig(reward_type=None, n_envs=3, sac=SACConfig(hidden_dims=(8,)), **kw)
    return DSRL(ToySteerable(), 4, cfg)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_collector_rows_match_the_chunk_mdp(toy_task, asynchronous):
    learner = _learner()
    env = task_vector_env(toy_task, learner, 3, asynchronous=asynchronous)
    collector = VectorCollector(env, seed=0)
    batch = collector.collect(learner, warmup=True, vector_steps=8, gamma=0.9)
    collector.close()
    assert len(batch) == 24 and batch.env_id.tolist() == [0, 1, 2] * 8
    assert batch.action.shape == (24, learner.noise_dim + learner.chunk_dim)
    # the stored chunk is the base's denoising of the stored noise, as executed
    noise, chunk = np.split(batch.action, [learner.noise_dim], axis=1)
    np.testing.assert_allclose(chunk, learner.base_chunk(batch.state, noise).reshape(24, -1))
    # a chunk of k steps is discounted by gamma^k, and by 0 when the episode terminated
    terminal = batch.done & batch.success
    np.testing.assert_allclose(batch.discount[~terminal], 0.9 ** batch.steps[~terminal])
    assert np.all(batch.discount[terminal] == 0)
    # the other episode ends are the time limit: timeouts, for the learner to score or not
    np.testing.assert_array_equal(batch.timeout, batch.done & ~terminal)
    assert batch.env_steps == batch.steps.sum() and batch.done.any()  # 12-step episodes
    assert collector.timings["inference_s"] > 0 and collector.timings["env_s"] > 0


def test_async_envs_give_the_same_transitions_as_sync_ones(toy_task):
    batches = []
    for asynchronous in (False, True):
        learner = _learner(seed=3)
        collector = VectorCollector(
            task_vector_env(toy_task, learner, 3, asynchronous=asynchronous), seed=5
        )
        batches.append(collector.collect(learner, warmup=True, vector_steps=6))
        collector.close()
    for name in ("state", "action", "reward", "next_state", "discount", "done"):
        np.testing.assert_array_equal(getattr(batches[0], name), getattr(batches[1], name))


def test_transitions_concatenate_and_select_rows():
    learner = _learner()
    rows = Transitions(
        **{k: np.arange(3) for k in ("reward", "discount", "steps", "env_id")},
        state=np.zeros((3, 4)),
        action=np.zeros((3, learner.noise_dim)),
        next_state=np.zeros((3, 4)),
        done=np.array([0, 1, 0], bool),
        success=np.zeros(3, bool),
        timeout=np.array([0, 1, 0], bool),
    )
    both = Transitions.concat([rows, rows.rows(slice(1, None))])
    assert len(both) == 5 and both.reward.tolist() == [0, 1, 2, 1, 2]
    with pytest.raises(ValueError, match="no transitions"):
        Transitions.concat([])
