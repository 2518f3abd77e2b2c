"""DSRL with the daemon as its environment, end to end on the MuJoCo-backed driver: the daemon
acts and records, the learner trains from the store and pushes noise-actor weights over the
control API between episodes. (That it *improves* is the daemon bench's claim, not a test's.)"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from real.api import ControlServer
from real.client import DaemonClient
from real.daemon import DaemonConfig, RobotDaemon
from real.onrobot import chunk_transitions, improve_on_robot
from real.safety import SafetyConfig, SafetyLayer
from real.sim_driver import MujocoDriver
from robot_rl.improvers.dsrl import DSRLConfig
from robot_rl.policies.checkpoint import load_policy
from robot_rl.rl.sac import SACConfig


def test_chunk_transitions_follow_chunk_ids_and_discount():
    episode = {
        "chunk_id": np.array([0, 0, 0, 1, 1, -1]),
        "state": np.arange(6, dtype=np.float32)[:, None],
        "reward": np.array([0, 0, 0, 0, 1, 0], np.float32),
        "terminated": np.array([0, 0, 0, 0, 0, 1], bool),
        "action": np.ones((6, 1), np.float32),
        "latent_noise": np.arange(6, dtype=np.float32)[:, None],
    }
    out = chunk_transitions(episode, n_obs_steps=2, n_action_steps=3, gamma=0.5)
    np.testing.assert_array_equal(out["state"], [[0, 0], [2, 3]])  # history, padded at t=0
    np.testing.assert_array_equal(out["next_state"][0], [2, 3])
    np.testing.assert_allclose(out["reward"], [0.0, 0.5])  # gamma^1 * 1 in the second chunk
    np.testing.assert_allclose(out["discount"], [0.125, 0.0])  # gamma^3; terminal
    np.testing.assert_array_equal(out["noise"][:, 0], [0, 3])


def test_chunk_transitions_end_the_return_at_the_time_limit_but_not_at_an_abort():
    episode = {
        "chunk_id": np.array([0, 0, 1, 1]),
        "state": np.arange(4, dtype=np.float32)[:, None],
        "reward": np.zeros(4, np.float32),
        "terminated": np.zeros(4, bool),  # ran out its steps
        "action": np.ones((4, 1), np.float32),
        "latent_noise": np.zeros((4, 1), np.float32),
    }
    timed_out = chunk_transitions(episode, 1, 2, gamma=0.5)
    np.testing.assert_allclose(timed_out["discount"], [0.25, 0.0])
    bootstrapped = chunk_transitions(episode, 1, 2, gamma=0.5, bootstrap_timeouts=True)
    np.testing.assert_allclose(bootstrapped["discount"], [0.25, 0.25])
    aborted = chunk_transitions({**episode, "aborted": np.ones(4, bool)}, 1, 2, gamma=0.5)
    np.testing.assert_allclose(aborted["discount"], [0.25, 0.25])  # cut short, not scored


@pytest.mark.filterwarnings("ignore")
def test_dsrl_through_the_daemon_pushes_weights_between_episodes(
    push_task, clock, tmp_path, tiny_diffusion
):
    base_path = tiny_diffusion
    driver = MujocoDriver(push_task, realtime=False, clock=clock, time_scale=3.0)
    store = tmp_path / "robot.zarr"
    daemon = RobotDaemon(
        SafetyLayer(driver, SafetyConfig(action_dim=2, stale_after_s=0.05), clock=clock),
        DaemonConfig(rate_hz=30, max_episode_steps=12, prefetch=-1, wait_for_chunk_s=10),
        store,
        "push",
        "sim_push",
        clock=clock,
        sleep=clock.sleep,
    )
    server = ControlServer(daemon, port=0, load_policy=load_policy)
    daemon.start()
    server.start()
    try:
        cfg = DSRLConfig(sac=replace(SACConfig(), hidden_dims=(32, 32), batch_size=8))
        learner, result = improve_on_robot(
            DaemonClient(server.url),
            store,
            base_path,
            cfg,
            env_steps=60,
            out=tmp_path / "run",
            warmup_env_steps=24,
        )
    finally:
        server.close()
        daemon.shutdown()
    # 5 episodes of 12 steps, 3 chunks each; updates start after the 24-step warm-up once the
    # replay holds a batch (3 episodes), and the stochastic actor is pushed before each episode
    assert result.episodes == 5 and result.env_steps == 60 and result.transitions == 5 * 3
    assert result.updates == 3 + 3 + 3 and result.pushes == 2
    # the networks' input normalisation was fitted on the warm-up's states, as in simulation
    assert not torch.equal(learner.sac.actor.obs_norm.scale, torch.ones(20))
    assert daemon.policy_path == str(tmp_path / "run" / "policy")
    # what the daemon ran last is the learner's actor as it was pushed
    pushed = load_policy(tmp_path / "run" / "policy")
    obs = {"state": np.zeros((1, 2, 10), np.float32)}
    assert pushed.deterministic  # the checkpoint left at the end acts with the actor's mean
    np.testing.assert_allclose(pushed.base_noise(obs), learner.policy.base_noise(obs), atol=1e-6)


def test_the_episode_clock_is_refused_through_the_daemon_before_anything_runs(tmp_path):
    # the daemon's episodes carry no clock: a clear error before a client call or a file
    with pytest.raises(ValueError, match="clock=false"):
        improve_on_robot(
            None,
            tmp_path / "robot.zarr",
            tmp_path / "base",
            DSRLConfig(clock=True),
            env_steps=60,
            out=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()
