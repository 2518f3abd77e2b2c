"""A MuJoCo task behind the driver protocol, behaving like hardware.

The physics does not wait for the controller: it advances with the clock (``time_scale`` sim
seconds per second), the last command is held between writes, and the sensors sample on their
own schedule. Faults a test can inject (:class:`Faults`, at construction or later with
:meth:`MujocoDriver.inject`): sensor latency, Gaussian sensor noise, dropped frames, a stall
(the link freezes: no new samples, commands ignored) and a disconnect.

Two ways to run the same plant:

* ``realtime=True`` (the daemon's): the physics runs in its own process in real time and
  streams samples over a pipe; this process keeps the latest one.
* ``realtime=False`` (unit tests): the plant lives in this process and is advanced lazily to
  ``clock()`` at every ``read``/``write``; with a fake clock, runs are exact and instant.

Timeline of one sample with latency L and a drop::

    physics  |--s1--|--s2--|--s3--|--s4--|      (sensor period)
    sampled   t1     t2     t3(x)  t4           x: dropped, never delivered
    delivered    t1+L   t2+L          t4+L      read() returns the newest delivered sample,
                                                stamped with its *sampling* time

The plant uses the task class's hooks (``_apply_action``, ``_state``, ``_success``) to step
the physics one timestep at a time; it supports robot_rl's own MuJoCo tasks (``sim.tasks``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import mujoco
import numpy as np

from robot_rl.core import keys
from robot_rl.core.driver import TIMESTAMP
from robot_rl.core.task import TaskConfig, make_env


@dataclass(frozen=True)
class Faults:
    """Sensor and link imperfections."""

    latency_s: float = 0.0
    """delay between sampling and delivery of an observation"""
    noise_std: float = 0.0
    """std of Gaussian noise added to the state"""
    drop_prob: float = 0.0
    """probability that a sample is never delivered"""
    stall_s: float = 0.0
    """freeze the link for this long from the moment it is injected"""
    disconnect: bool = False
    """drop the link for good (the driver raises ConnectionError from then on)"""


class SimPlant:
    """Physics, sensors and faults of one task; advanced to a time, not by steps."""

    def __init__(
        self, task: TaskConfig, faults: Faults, seed: int, time_scale: float, sensor_hz: float
    ):
        self.env = make_env(task).unwrapped
        for hook in ("_apply_action", "_state", "_success"):
            if not hasattr(self.env, hook):
                raise TypeError(
                    f"task {task.name!r} ({type(self.env).__name__}) is not a robot_rl MuJoCo "
                    f"task (no {hook}); the MuJoCo-backed driver supports sim.tasks only"
                )
        self.model, self.data = self.env.model, self.env.data
        self.dt = float(self.model.opt.timestep)
        self.action_dim = int(self.env.action_space.shape[0])
        self.time_scale = time_scale
        self.sensor_period = 1.0 / sensor_hz
        self.rng = np.random.default_rng(seed)
        self.faults = replace(faults, stall_s=0.0, disconnect=False)
        self.command = np.zeros(self.action_dim, np.float32)
        self.latest: dict[str, np.ndarray] | None = None
        self.disconnected = False
        self._stall_until = -np.inf
        self._queue: deque[tuple[float, dict[str, np.ndarray]]] = deque()
        self._t0: float | None = None
        self._sim_steps = 0
        self._next_sample = 0.0
        self._seed = seed

    def start(self, now: float) -> None:
        self._t0 = now
        self.reset(now, self._seed)

    def inject(self, now: float, faults: dict[str, Any]) -> None:
        fields = {**asdict(self.faults), **faults}
        if fields.pop("disconnect", False):
            self.disconnected = True
        stall = fields.pop("stall_s", 0.0)
        if stall > 0:
            self._stall_until = now + stall
        self.faults = Faults(**fields)

    def stalled(self, now: float) -> bool:
        return now < self._stall_until

    def reset(self, now: float, seed: int | None) -> dict[str, np.ndarray]:
        """A new episode's scene (on hardware a person does this); returns its first sample."""
        self.env.reset(seed=seed)
        self.command[:] = 0.0
        self._queue.clear()
        self._sample(now, deliver_now=True)
        return self.latest

    def apply(self, now: float, action: np.ndarray) -> np.ndarray:
        self.advance_to(now)
        if not self.stalled(now):
            self.command = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        return self.command.copy()

    def advance_to(self, now: float) -> None:
        """Step the physics (holding the last command) and the sensors up to ``now``."""
        assert self._t0 is not None, "start() the plant first"
        target = int((now - self._t0) * self.time_scale / self.dt)
        wall_per_step = self.dt / self.time_scale
        while self._sim_steps < target:
            self.env._apply_action(self.command)
            mujoco.mj_step(self.model, self.data)
            self._sim_steps += 1
            t = self._t0 + self._sim_steps * wall_per_step
            if t >= self._next_sample:
                self._next_sample = t + self.sensor_period
                if not self.stalled(t):
                    self._sample(t)
        self._deliver(now)

    def _sample(self, t: float, deliver_now: bool = False) -> None:
        state = self.env._state()
        if self.faults.noise_std > 0:
            state = state + self.rng.normal(0, self.faults.noise_std, state.shape).astype(
                np.float32
            )
        obs = {keys.STATE: state, TIMESTAMP: np.float64(t)}
        obs[keys.IS_SUCCESS] = np.bool_(self.env._success())
        for camera in self.env.cameras:
            obs[keys.image_key(camera)] = self.env._renderer.render(camera, self.env.image_size)
        if deliver_now:
            self.latest = obs
        elif self.rng.random() >= self.faults.drop_prob:
            self._queue.append((t + self.faults.latency_s, obs))

    def _deliver(self, now: float) -> None:
        while self._queue and self._queue[0][0] <= now:
            self.latest = self._queue.popleft()[1]

    def close(self) -> None:
        self.env.close()


class MujocoDriver:
    """Driver protocol over a :class:`SimPlant`; see the module docstring.

    Besides the protocol: ``reset(seed)`` (a new scene, as a person would set it up),
    ``inject(**faults)``, ``hold_action(obs)`` (zeros: the tasks take velocity commands)."""

    def __init__(
        self,
        task: TaskConfig | str,
        faults: Faults | dict = Faults(),
        seed: int = 0,
        time_scale: float = 1.0,
        sensor_hz: float = 100.0,
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout_s: float = 30.0,
    ):
        if time_scale <= 0 or sensor_hz <= 0:
            raise ValueError(f"time_scale and sensor_hz must be > 0, got {time_scale}, {sensor_hz}")
        if isinstance(task, str):
            from robot_rl import config

            task = config.load_job("eval", config.EvalJob, [f"task={task}"]).task.build()
        self.task, self.seed = task, seed
        self.faults = Faults(**faults) if isinstance(faults, dict) else faults
        self.time_scale, self.sensor_hz = time_scale, sensor_hz
        self.realtime = realtime
        self.clock = clock if not realtime else time.monotonic  # processes share CLOCK_MONOTONIC
        self.connect_timeout_s = connect_timeout_s
        self._plant: SimPlant | None = None
        self._link: _ProcessLink | None = None

    # ---------------------------------------------------------------- protocol

    @property
    def is_connected(self) -> bool:
        if self._link is not None:
            return self._link.alive
        return self._plant is not None and not self._plant.disconnected

    def connect(self) -> None:
        if self.is_connected:
            return
        if self.realtime:
            self._link = _ProcessLink(self, self.connect_timeout_s)
        else:
            self._plant = SimPlant(self.task, Faults(), self.seed, self.time_scale, self.sensor_hz)
            self._plant.start(self.clock())
            self._plant.inject(self.clock(), asdict(self.faults))

    def read(self) -> dict[str, np.ndarray]:
        if self._link is not None:
            return self._link.latest()
        plant = self._connected_plant()
        plant.advance_to(self.clock())
        return dict(plant.latest)

    def write(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, np.float32)
        if self._link is not None:
            return self._link.send_action(action)
        return self._connected_plant().apply(self.clock(), action)

    def disconnect(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._plant is not None:
            self._plant.close()
            self._plant = None

    # ---------------------------------------------------------------- beyond the protocol

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if self._link is not None:
            return self._link.reset(seed)
        plant = self._connected_plant()
        plant.advance_to(self.clock())
        return dict(plant.reset(self.clock(), seed))

    def inject(self, **faults: Any) -> None:
        unknown = set(faults) - set(Faults.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown faults {sorted(unknown)}; known: {list(Faults.__dataclass_fields__)}"
            )
        if self._link is not None:
            self._link.send(("fault", faults))
        else:
            self._connected_plant().inject(self.clock(), faults)

    def hold_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros(self.action_dim, np.float32)

    @functools.cached_property
    def action_dim(self) -> int:
        env = make_env(self.task)
        try:
            return int(env.action_space.shape[0])
        finally:
            env.close()

    def _connected_plant(self) -> SimPlant:
        if self._plant is None or self._plant.disconnected:
            raise ConnectionError(f"MuJoCo driver for {self.task.name!r} is not connected")
        return self._plant


# -------------------------------------------------------------------- the physics process


def _serve(conn, task: TaskConfig, faults: Faults, seed: int, time_scale: float, hz: float):
    """The child process: real-time physics, streaming samples to ``conn``."""
    from real.daemon import raise_priority

    raise_priority("physics process")  # the robot's own controllers do not wait for the host
    plant = SimPlant(task, Faults(), seed, time_scale, hz)
    plant.start(time.monotonic())
    plant.inject(time.monotonic(), asdict(faults))
    conn.send(("obs", plant.latest))
    sent = plant.latest
    tick = plant.dt / time_scale
    try:
        while not plant.disconnected:
            while conn.poll():
                kind, *args = conn.recv()
                now = time.monotonic()
                if kind == "act":
                    plant.apply(now, args[0])
                elif kind == "reset":
                    plant.advance_to(now)
                    sent = plant.reset(now, args[0])
                    conn.send(("reset", sent))
                elif kind == "fault":
                    plant.inject(now, args[0])
                elif kind == "close":
                    return
            plant.advance_to(time.monotonic())
            if plant.latest is not sent and not plant.disconnected:
                sent = plant.latest
                conn.send(("obs", sent))
            time.sleep(max(0.0, tick - (time.monotonic() % tick)))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass
    finally:
        conn.close()
        plant.close()


class _ProcessLink:
    """This side of the pipe: a reader thread keeps the newest sample."""

    def __init__(self, driver: MujocoDriver, timeout_s: float):
        ctx = mp.get_context("spawn")  # never fork a process that runs threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(
                child,
                driver.task,
                driver.faults,
                driver.seed,
                driver.time_scale,
                driver.sensor_hz,
            ),
            daemon=True,
            name=f"mujoco-driver-{driver.task.name}",
        )
        self._proc.start()
        child.close()
        self._lock = threading.Condition()
        self._latest: dict[str, np.ndarray] | None = None
        self._reset_reply: dict[str, np.ndarray] | None = None
        self.alive = True
        self._timeout_s = timeout_s
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="driver-reader")
        self._reader.start()
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._latest is not None or not self.alive, timeout_s
            ):
                self.close()
                raise ConnectionError(f"MuJoCo driver process gave no sample in {timeout_s} s")
        if not self.alive:
            raise ConnectionError("MuJoCo driver process exited while connecting")

    def _read_loop(self) -> None:
        from real.daemon import raise_priority

        raise_priority("driver reader", 5)  # below the control thread, above everything else
        try:
            while True:
                kind, payload = self._conn.recv()
                with self._lock:
                    if kind == "reset":
                        self._reset_reply = payload
                    self._latest = payload
                    self._lock.notify_all()
        except (EOFError, OSError):
            with self._lock:
                self.alive = False
                self._lock.notify_all()

    def latest(self) -> dict[str, np.ndarray]:
        with self._lock:
            if not self.alive:
                raise ConnectionError("MuJoCo driver: link lost (the physics process is gone)")
            return dict(self._latest)

    def send(self, message: tuple) -> None:
        if not self.alive:
            raise ConnectionError("MuJoCo driver: link lost (the physics process is gone)")
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError) as err:
            self.alive = False
            raise ConnectionError(f"MuJoCo driver: link lost: {err}") from err

    def send_action(self, action: np.ndarray) -> np.ndarray:
        self.send(("act", action))
        return np.clip(action, -1.0, 1.0)

    def reset(self, seed: int | None) -> dict[str, np.ndarray]:
        with self._lock:
            self._reset_reply = None
        self.send(("reset", seed))
        with self._lock:
            ok = self._lock.wait_for(
                lambda: self._reset_reply is not None or not self.alive, self._timeout_s
            )
            if not ok or not self.alive:
                raise ConnectionError("MuJoCo driver: no reply to reset")
            return dict(self._reset_reply)

    def close(self) -> None:
        if self.alive:
            try:
                self._conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._conn.close()
        self.alive = False
