"""The MuJoCo-backed driver behaves like hardware: physics moves with the clock, sensors have
latency, noise, drops and stalls, and the link can die."""

import time

import numpy as np
import pytest

from real.sim_driver import Faults, MujocoDriver
from robot_rl.core.driver import Driver


def _lockstep(push_task, clock, **faults):
    driver = MujocoDriver(push_task, Faults(**faults), realtime=False, clock=clock)
    driver.connect()
    driver.reset(seed=1)
    return driver


def test_physics_advances_with_the_clock_and_holds_the_last_command(push_task, clock):
    driver = _lockstep(push_task, clock)
    assert isinstance(driver, Driver)
    x0 = driver.read()["state"][0]
    driver.write(np.array([1.0, 0.0]))
    assert driver.read()["state"][0] == x0  # no time passed: nothing moved
    clock.sleep(0.2)
    x1 = driver.read()["state"][0]
    clock.sleep(0.2)
    x2 = driver.read()["state"][0]
    assert x0 < x1 < x2  # the command is held between writes


def test_latency_is_visible_in_the_timestamp(push_task, clock):
    driver = _lockstep(push_task, clock, latency_s=0.05)
    clock.sleep(0.5)
    obs = driver.read()
    assert 0.05 - 1e-9 <= clock() - obs["timestamp"] <= 0.05 + 0.011  # + one sensor period


def test_drops_and_noise_are_reproducible(push_task, clock):
    ages, states = [], []
    for _ in range(2):
        c = type(clock)()
        driver = _lockstep(push_task, c, drop_prob=0.5, noise_std=0.01)
        run = []
        for _ in range(20):
            c.sleep(0.01)
            obs = driver.read()
            run.append((c() - obs["timestamp"], obs["state"][0]))
        ages.append([a for a, _ in run])
        states.append([s for _, s in run])
    assert ages[0] == ages[1] and states[0] == states[1]
    assert max(ages[0]) > 0.015  # some frames were dropped: the newest sample is older


def test_stall_freezes_the_sensors_and_ignores_commands(push_task, clock):
    driver = _lockstep(push_task, clock)
    driver.inject(stall_s=0.3)
    stamp = driver.read()["timestamp"]
    driver.write(np.array([1.0, 1.0]))
    clock.sleep(0.2)
    obs = driver.read()
    assert obs["timestamp"] == stamp and obs["state"][2] == 0.0  # no new sample, no motion
    clock.sleep(0.2)
    assert driver.read()["timestamp"] > stamp


def test_disconnect_raises_connection_error(push_task, clock):
    driver = _lockstep(push_task, clock)
    driver.inject(disconnect=True)
    assert not driver.is_connected
    with pytest.raises(ConnectionError):
        driver.read()
    with pytest.raises(ConnectionError):
        driver.write(np.zeros(2))
    with pytest.raises(ValueError, match="unknown faults"):
        MujocoDriver(push_task, realtime=False).inject(fire=True)


def test_realtime_process_streams_fresh_samples_and_dies_cleanly(push_task):
    driver = MujocoDriver(push_task, realtime=True)
    driver.connect()
    try:
        driver.reset(seed=0)
        driver.write(np.array([1.0, 0.0]))
        time.sleep(0.2)
        obs = driver.read()
        assert time.monotonic() - obs["timestamp"] < 0.1  # tolerant: a loaded CI machine
        assert obs["state"][2] > 0.0  # the pusher moves in real time
        driver.inject(disconnect=True)
        deadline = time.monotonic() + 5
        while driver.is_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ConnectionError):
            driver.read()
    finally:
        driver.disconnect()
