"""The safety layer: nothing unsafe reaches the driver, violations stop the robot and are
reported."""

import numpy as np
import pytest

from real.safety import SafetyConfig, SafetyLayer


class RecordingDriver:
    """A driver fake that records every write and serves a settable observation."""

    def __init__(self, clock, state=(0.0, 0.0)):
        self.clock, self.writes, self.is_connected = clock, [], False
        self.state = np.asarray(state, np.float32)
        self.fail = False
        self.stamp_offset = 0.0

    def connect(self):
        self.is_connected = True

    def disconnect(self):
        self.is_connected = False

    def read(self):
        if self.fail:
            raise ConnectionError("cable pulled")
        return {
            "state": self.state.copy(),
            "timestamp": np.float64(self.clock() + self.stamp_offset),
        }

    def write(self, action):
        if self.fail:
            raise ConnectionError("cable pulled")
        self.writes.append(np.array(action))
        return np.array(action, np.float32)


CFG = SafetyConfig(
    action_dim=2,
    action_low=[-0.8, -1.0],
    action_high=[0.8, 1.0],
    max_delta=0.25,
    workspace_state_index=[0, 1],
    workspace_action_index=[0, 1],
    workspace_low=[-0.3, -0.3],
    workspace_high=[0.3, 0.3],
    stale_after_s=0.05,
)


@pytest.fixture
def layer(clock):
    driver = RecordingDriver(clock)
    safety = SafetyLayer(driver, CFG, clock=clock)
    safety.connect()
    safety.read()
    return safety, driver


def test_ten_thousand_random_bad_actions_never_reach_the_driver_unsafe(layer):
    safety, driver = layer
    rng = np.random.default_rng(0)
    previous = np.zeros(2, np.float32)
    for _ in range(10_000):
        kind = rng.integers(5)
        action = rng.uniform(-1, 1, 2)
        if kind == 0:
            action[rng.integers(2)] = np.nan
        elif kind == 1:
            action[rng.integers(2)] = rng.choice([np.inf, -np.inf])
        elif kind == 2:
            action = action * 1e6
        elif kind == 3:
            action = rng.uniform(-1, 1, rng.integers(1, 5) + (rng.integers(2) * 2))
        safety.write(action)
        sent = driver.writes[-1]
        assert sent.shape == (2,) and np.all(np.isfinite(sent))
        assert np.all(sent >= CFG.low) and np.all(sent <= CFG.high)
        assert np.all(np.abs(sent - previous) <= 0.25 + 1e-6)
        previous = sent
    kinds = {e["kind"] for e in safety.drain_events()}
    assert {"bad_action", "joint_limit", "rate_limit"} <= kinds


def test_workspace_box_stops_motion_outwards_only(layer):
    safety, driver = layer
    driver.state = np.array([0.31, -0.31], np.float32)  # outside x high and y low
    safety.read()
    applied = safety.write([0.2, -0.2])
    np.testing.assert_array_equal(applied, [0.0, 0.0])
    applied = safety.write([-0.2, 0.2])  # back inside is allowed
    np.testing.assert_allclose(applied, [-0.2, 0.2])
    assert any(e["kind"] == "workspace" for e in safety.drain_events())


def test_stale_or_nan_observation_latches_a_safe_stop_until_cleared(layer, clock):
    safety, driver = layer
    driver.stamp_offset = -0.2  # the sensors stopped 200 ms ago
    safety.read()
    assert safety.stopped == "stale_observation"
    np.testing.assert_array_equal(safety.write([0.2, 0.2]), [0.0, 0.0])
    driver.stamp_offset = 0.0
    safety.read()
    assert safety.stopped == "stale_observation"  # stays stopped: a person decides
    safety.clear_stop()
    driver.state = np.array([np.nan, 0.0], np.float32)
    safety.read()
    assert safety.stopped == "bad_observation"


def test_estop_holds_immediately_and_reports(layer):
    safety, driver = layer
    safety.write([0.2, 0.2])
    safety.estop()
    np.testing.assert_array_equal(driver.writes[-1], [0.0, 0.0])
    np.testing.assert_array_equal(safety.write([0.5, 0.5]), [0.0, 0.0])
    assert [e["kind"] for e in safety.drain_events()] == ["estop"]


def test_missed_deadlines_are_events_and_too_many_stop(layer):
    safety, _ = layer
    for _ in range(CFG.max_missed_deadlines):
        safety.missed_deadline(0.02)
    assert safety.stopped is None
    safety.missed_deadline(0.02)
    assert safety.stopped == "missed_deadline"
    assert sum(e["kind"] == "missed_deadline" for e in safety.drain_events()) == 4


def test_driver_errors_stop_and_propagate(layer):
    safety, driver = layer
    driver.fail = True
    with pytest.raises(ConnectionError):
        safety.write([0.1, 0.1])
    assert safety.stopped == "driver_error"


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="max_delta has 3"):
        SafetyConfig(action_dim=2, max_delta=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="workspace"):
        SafetyConfig(action_dim=2, workspace_state_index=[0])
