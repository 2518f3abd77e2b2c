"""The daemon on the MuJoCo-backed driver in lock-step with a fake clock: episodes run at the
fixed rate, chunks are executed, faults end episodes safely, everything is recorded."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import PushUp

from real.api import ControlServer
from real.daemon import DaemonConfig, DaemonError, RobotDaemon
from real.safety import SafetyConfig, SafetyLayer
from real.sim_driver import MujocoDriver
from robot_rl.data import EpisodeStore

SAFETY = SafetyConfig(action_dim=2, max_delta=0.5, stale_after_s=0.05)


@pytest.fixture
def make_daemon(push_task, clock, tmp_path):
    made = []

    def make(steps=20, **cfg):
        driver = MujocoDriver(push_task, realtime=False, clock=clock)
        daemon = RobotDaemon(
            SafetyLayer(driver, SAFETY, clock=clock),
            DaemonConfig(rate_hz=30, max_episode_steps=steps, wait_for_chunk_s=5, **cfg),
            tmp_path / "robot.zarr",
            "push",
            "sim_push",
            clock=clock,
            sleep=clock.sleep,
        )
        daemon.set_policy(PushUp(), "push_up")
        daemon.start()
        made.append(daemon)
        return daemon, driver

    yield make
    for daemon in made:
        daemon.shutdown()


def _run(daemon, seed=0):
    daemon.start_episode(seed=seed)
    assert daemon.wait_idle(30)
    return daemon.episodes[-1]


def test_episodes_run_at_the_rate_and_are_recorded_with_chunks(make_daemon, tmp_path):
    daemon, _ = make_daemon(prefetch=-1)
    summaries = [_run(daemon, seed) for seed in range(2)]
    assert [s["steps"] for s in summaries] == [20, 20] and not summaries[0]["aborted"]
    snap = daemon.metrics.snapshot()
    assert snap["period_p99_ms"] == pytest.approx(1000 / 30)
    assert snap["missed_deadlines"] == 0 and snap["chunks"] >= 10
    store = EpisodeStore.open(tmp_path / "robot.zarr")
    ep = store.get_episode(1)
    # synchronous chunks of 4: ids advance every 4 steps, indices cycle 0..3
    np.testing.assert_array_equal(ep["chunk_step"][:8], [0, 1, 2, 3, 0, 1, 2, 3])
    assert len(set(ep["chunk_id"][:4])) == 1 and ep["chunk_id"][4] == ep["chunk_id"][0] + 1
    assert ep["latent_noise"].shape == (20, 16) and not ep["intervention"].any()
    assert store.meta["source"] == "robot_daemon"


def test_stall_stops_within_two_periods_and_the_episode_is_aborted(make_daemon, clock):
    daemon, driver = make_daemon(steps=200)
    daemon.start_episode(seed=0)
    while (daemon.status()["episode"] or {}).get("steps", 0) < 5:
        pass
    with daemon._lock:  # inject between two ticks
        driver.inject(stall_s=10.0)
        steps_at_fault = daemon._ep.steps
    assert daemon.wait_idle(30)
    assert daemon.episodes[-1]["aborted"] == "stale_observation"
    assert daemon.safety.total_events["stale_observation"] == 1
    # the last sample is at most one sensor period old at the fault; 50 ms later it is stale
    assert daemon.episodes[-1]["steps"] - steps_at_fault <= 2


def test_disconnect_aborts_the_episode_and_the_daemon_stays_up(make_daemon, push_task):
    daemon, driver = make_daemon(steps=200)
    daemon.start_episode(seed=0)
    while (daemon.status()["episode"] or {}).get("steps", 0) < 3:
        pass
    with daemon._lock:
        driver.inject(disconnect=True)
    assert daemon.wait_idle(30)
    assert daemon.episodes[-1]["aborted"] == "driver_error"
    assert daemon.status()["connected"] is False
    summary = _run(daemon, seed=1)  # the next episode reconnects
    assert summary["aborted"] is None and summary["steps"] == 200 or summary["success"]


def test_labels_estop_and_intervention(make_daemon, tmp_path):
    daemon, _ = make_daemon(steps=15)
    daemon.set_intervention(on=True, action=[0.0, -0.3])
    daemon.start_episode(seed=0)
    daemon.label(True)
    assert daemon.wait_idle(30)
    assert daemon.episodes[-1]["success"] and daemon.episodes[-1]["labelled"]
    daemon.set_intervention(on=False)
    daemon.estop()
    with pytest.raises(DaemonError, match="e-stop"):
        daemon.start_episode()
    daemon.clear_estop()
    assert _run(daemon)["steps"] == 15
    with pytest.raises(DaemonError, match="no episode"):
        daemon.label(False)
    ep = EpisodeStore.open(tmp_path / "robot.zarr").get_episode(0)
    assert ep["intervention"].all() and (ep["chunk_id"] == -1).all()
    np.testing.assert_allclose(ep["action"][-1], [0.0, -0.3])


def _call(url, method="GET", body=None, token=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_control_api_routes_auth_and_malformed_requests(make_daemon):
    daemon, _ = make_daemon(steps=10)
    with pytest.raises(ValueError, match="token"):
        ControlServer(daemon, host="0.0.0.0", port=0)
    server = ControlServer(
        daemon, host="0.0.0.0", port=0, token="s3cret", load_policy=lambda p: PushUp()
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert _call(url + "/status")[0] == 401
        assert _call(url + "/estop", "POST", token="wrong")[0] == 401
        assert server.refused == 2 and daemon.safety.stopped is None
        ok = lambda *a, **k: _call(*a, token="s3cret", **k)  # noqa: E731
        assert ok(url + "/episode/start", "POST", raw=b"{not json")[0] == 400
        assert ok(url + "/label", "POST", {})[0] == 400
        assert ok(url + "/episode/start", "POST", {"seed": "x"})[0] == 400
        assert ok(url + "/nowhere")[0] == 404
        assert ok(url + "/status", "POST")[0] == 405
        assert ok(url + "/label", "POST", {"success": True})[0] == 409
        assert ok(url + "/policy", "POST", {"path": "anything"})[0] == 200
        status, text = ok(url + "/episode/start", "POST", {"seed": 3})
        assert status == 200 and json.loads(text)["seed"] == 3
        assert daemon.wait_idle(30) and daemon.episodes[-1]["steps"] == 10
        status, text = ok(url + "/metrics")
        assert status == 200 and 'robot_rl_loop_period_seconds{quantile="0.99"}' in text
        assert json.loads(ok(url + "/status")[1])["episodes_recorded"] == 1
    finally:
        server.close()
