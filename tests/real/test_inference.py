"""Chunk inference in its own process: checkpoints loaded in the child, stale results dropped,
steered policies sampled with the worker's noise, a dead child revived; and the daemon serving
episodes with it, its policy loaded over the control API."""

import numpy as np
import pytest

from real.api import ControlServer
from real.client import DaemonClient
from real.daemon import DaemonConfig, DaemonError, RobotDaemon
from real.inference import InferenceProcess
from real.safety import SafetyConfig, SafetyLayer
from real.sim_driver import MujocoDriver
from robot_rl.data import EpisodeStore
from robot_rl.improvers.steered import SteeredPolicy, save_steered
from robot_rl.policies.checkpoint import load_policy
from robot_rl.rl.networks import TanhGaussianActor

OBS = {"state": np.zeros((2, 10), np.float32)}


def _steered(base_path, path, deterministic, reads_clock=False):
    actor = TanhGaussianActor(20 + reads_clock, 16, (8,), True)
    policy = SteeredPolicy(
        load_policy(base_path), actor, 1.5, deterministic, reads_clock=reads_clock
    )
    return save_steered(policy, path, base_path)


def test_daemon_with_process_inference_loads_over_the_api_drops_stale_and_revives(
    push_task, clock, tmp_path, tiny_diffusion
):
    base = tiny_diffusion
    daemon = RobotDaemon(
        SafetyLayer(
            MujocoDriver(push_task, realtime=False, clock=clock),
            SafetyConfig(action_dim=2, stale_after_s=0.05),
            clock=clock,
        ),
        DaemonConfig(
            rate_hz=30, max_episode_steps=10, prefetch=-1, wait_for_chunk_s=60, inference="process"
        ),
        tmp_path / "robot.zarr",
        "push",
        "sim_push",
        clock=clock,
        sleep=clock.sleep,
    )
    worker = daemon.worker
    assert isinstance(worker, InferenceProcess)
    with pytest.raises(TypeError, match="path"):
        daemon.set_policy(load_policy(base))
    server = ControlServer(daemon, port=0)  # no loader needed: the child loads
    daemon.start()
    server.start()
    try:
        client = DaemonClient(server.url)
        with pytest.raises(RuntimeError, match="422.*nowhere"):
            client.load_policy(str(tmp_path / "nowhere"))
        (tmp_path / "broken").mkdir()
        with pytest.raises(RuntimeError, match="422.*broken"):  # the child's own message
            client.load_policy(str(tmp_path / "broken"))
        client.load_policy(str(base))
        spec = worker.spec
        assert (spec.action_dim, spec.n_obs_steps, spec.n_action_steps, spec.noise_dim) == (
            2,
            2,
            4,
            16,
        )
        # the worker alone (no episode runs): chunks stamped with their tick, taken once
        worker.request(OBS, 7)
        assert worker.in_flight
        chunk = worker.take(60)
        assert chunk.actions.shape == (4, 2) and chunk.obs_tick == 7 and chunk.noise.shape == (16,)
        assert not worker.in_flight and worker.take() is None
        worker.request(OBS, 8)
        worker.clear()  # an episode ended: whatever answers that request is stale
        assert not worker.in_flight and worker.take(1.0) is None
        # a stochastic steered policy samples its actor with the worker's noise: two requests
        # for one observation give two noises, both within the bound
        client.load_policy(str(_steered(base, tmp_path / "steered", deterministic=False)))
        noises = []
        for tick in (0, 1):
            worker.request(OBS, tick)
            noises.append(worker.take(60).noise)
        assert not np.allclose(*noises) and np.abs(noises).max() <= 1.5
        # a policy that reads the episode clock is refused by the child; the old one stays
        clocked = _steered(base, tmp_path / "clocked", deterministic=True, reads_clock=True)
        with pytest.raises(RuntimeError, match="422.*episode clock"):
            client.load_policy(str(clocked))
        worker.request(OBS, 9)
        assert worker.take(60).noise.shape == (16,)
        # the child dies: no answer, an error; the next episode start revives it
        worker._proc.kill()
        worker._proc.join()
        worker.request(OBS, 2)
        assert worker.take(0.5) is None and "exited" in client.status()["policy_error"]
        summary = client.run_episode(seed=0, timeout=120)
        assert summary["steps"] == 10 and summary["aborted"] is None
        status = client.status()
        assert status["inference"] == "process" and status["policy_error"] is None
        assert status["policy"] == str(tmp_path / "steered")
        with pytest.raises(DaemonError, match="running"):
            daemon._pending_start = {"seed": 1}
            daemon.load_policy(str(base))
    finally:
        daemon._pending_start = None
        server.close()
        daemon.shutdown()
    episode = EpisodeStore.open(tmp_path / "robot.zarr").get_episode(0)
    np.testing.assert_array_equal(episode["chunk_step"], [0, 1, 2, 3] * 2 + [0, 1])
    assert episode["latent_noise"].shape == (10, 16) and np.abs(episode["action"]).max() <= 1


def test_the_inference_thread_refuses_a_clock_reading_policy_and_keeps_its_own(
    tmp_path, tiny_diffusion
):
    from real.chunks import InferenceWorker

    worker = InferenceWorker()
    try:
        base = load_policy(tiny_diffusion)
        worker.set_policy(base)
        clocked = load_policy(_steered(tiny_diffusion, tmp_path / "c", True, reads_clock=True))
        with pytest.raises(ValueError, match="episode clock"):
            worker.set_policy(clocked)
        assert worker.spec.noise_dim == 16
        worker.request(OBS, 0)
        assert worker.take(60).actions.shape == (4, 2)
    finally:
        worker.close()
