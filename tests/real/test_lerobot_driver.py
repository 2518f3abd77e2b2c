"""The LeRobot adapter on LeRobot's own SO-101 robot class, motor bus and Feetech SDK, with only
the serial line faked (``fake_feetech``)."""

import json

import numpy as np
import pytest

pytest.importorskip("lerobot", reason="lerobot is installed by scripts/setup.sh")

from fake_feetech import PRESENT_POSITION, FakeServos, serial_module  # noqa: E402

from real.lerobot_driver import LeRobotDriver  # noqa: E402
from real.safety import SafetyConfig, SafetyLayer  # noqa: E402

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture
def servos(monkeypatch):
    scs = pytest.importorskip("scservo_sdk.port_handler")
    servos = FakeServos()
    monkeypatch.setattr(scs, "serial", serial_module(servos))
    return servos


def _driver(tmp_path, calibration=True, **robot):
    if calibration:
        table = {
            m: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 0, "range_max": 4095}
            for i, m in enumerate(MOTORS)
        }
        (tmp_path / "arm.json").write_text(json.dumps(table))
    fields = {"port": "/dev/fake", "id": "arm", "calibration_dir": tmp_path, **robot}
    return LeRobotDriver("so101_follower", fields, joint_ranges={"gripper.pos": [0, 100]})


def test_reads_and_writes_through_lerobot_and_the_serial_bus(servos, tmp_path):
    driver = _driver(tmp_path)
    driver.connect()
    assert driver.is_connected and driver.action_dim == 6
    obs = driver.read()
    # 2048 ticks is the middle of 0..4095: 0 degrees, i.e. 0 in the normalised range
    np.testing.assert_allclose(obs["state"][:5], 0.0, atol=1e-3)
    assert obs["state"].dtype == np.float32 and np.isfinite(obs["timestamp"])
    applied = driver.write(np.array([0.5, 0, 0, 0, 0, 0.5], np.float32))
    # +0.5 of +-100 degrees = 50 degrees = 2047.5 + 50 * 4095 / 360 ticks
    assert servos.goal_writes[-1][1] == int(50 * 4095 / 360 + 2047.5)
    np.testing.assert_allclose(applied[0], 0.5, atol=1e-6)
    assert abs(driver.read()["state"][0] - 0.5) < 0.01  # the fake servo reached the goal
    driver.disconnect()
    assert not driver.is_connected


def test_lerobot_max_relative_target_is_reported_as_applied(servos, tmp_path):
    driver = _driver(tmp_path, max_relative_target=5.0)
    driver.connect()
    applied = driver.write(np.array([0.5, 0, 0, 0, 0, 0.5], np.float32))
    assert applied[0] == pytest.approx(0.05, abs=1e-3)  # present (~0 deg) + 5 of 100 deg


def test_uncalibrated_servos_get_the_saved_calibration_without_a_prompt(servos, tmp_path):
    for table in servos.tables.values():
        table[11:13] = (3000).to_bytes(2, "little")  # a max limit unlike the file
    driver = _driver(tmp_path)
    driver.connect()  # would block on input() if the adapter let LeRobot calibrate
    assert servos.word(1, 11) == 4095


def test_no_calibration_file_refuses_to_connect(servos, tmp_path):
    with pytest.raises(ConnectionError, match="calibrat"):
        _driver(tmp_path, calibration=False).connect()


def test_safety_layer_keeps_nan_off_the_bus_and_a_dead_bus_is_a_driver_error(servos, tmp_path):
    driver = _driver(tmp_path)
    safety = SafetyLayer(driver, SafetyConfig(action_dim=6, max_delta=0.1, stale_after_s=5))
    safety.connect()
    safety.read()
    writes = len(servos.goal_writes)
    applied = safety.write(np.array([np.nan, 0, 0, 0, 0, 0.5]))
    assert np.all(np.isfinite(applied)) and len(servos.goal_writes) == writes + 1
    # the hold action of a position-controlled arm is where it is: no motor moves
    assert servos.word(1, PRESENT_POSITION) == 2048
    servos.unplugged = True
    with pytest.raises(ConnectionError):
        safety.read()
    assert safety.stopped == "driver_error"
