"""The safety layer: the only path from a robot environment (or the daemon) to a driver.

Every action passes, in this order::

    e-stop / safe stop latched?  -> hold
    wrong shape, NaN or inf      -> hold, event "bad_action"
    joint limits                 -> clip to [action_low, action_high]       event "joint_limit"
    workspace box                -> components that push a watched state
                                    coordinate further out of its box are    event "workspace"
                                    zeroed (SERL's safety box, for velocity
                                    commands) or clipped (position commands)
    per-step change              -> |a - a_prev| <= max_delta                event "rate_limit"
                                    (LeRobot's ``max_relative_target``)

and every observation is checked for NaN/inf and for age (``now - timestamp``); a stale or
corrupt observation, a missed control deadline beyond ``max_missed_deadlines`` in a row, a
driver error or the software e-stop latch a *safe stop*: the driver receives only the hold
action until :meth:`SafetyLayer.clear_stop` (an operator's decision). Each event is logged and
kept for ``info["safety_events"]``; the action really written is ``info["applied_action"]``.

The layer never hands out its driver: nothing above it can write to the motors another way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.core import keys
from robot_rl.core.driver import TIMESTAMP, Driver

log = logging.getLogger(__name__)

# Event kinds; those in STOPPING latch a safe stop.
BAD_ACTION = "bad_action"
JOINT_LIMIT = "joint_limit"
WORKSPACE = "workspace"
RATE_LIMIT = "rate_limit"
BAD_OBSERVATION = "bad_observation"
STALE_OBSERVATION = "stale_observation"
MISSED_DEADLINE = "missed_deadline"
DRIVER_ERROR = "driver_error"
ESTOP = "estop"
STOPPING = frozenset({BAD_OBSERVATION, STALE_OBSERVATION, DRIVER_ERROR, ESTOP})


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of one robot, in the normalised action space ``[-1, 1]^A``."""

    action_dim: int
    """A, the size of every action"""
    action_low: Sequence[float] | None = None
    """per-joint lower limit (default -1); position-controlled arms: the joint limits"""
    action_high: Sequence[float] | None = None
    """per-joint upper limit (default +1)"""
    max_delta: float | Sequence[float] | None = None
    """largest change of each action component per control step (None: unlimited)"""
    workspace_state_index: Sequence[int] = ()
    """state coordinates watched by the workspace box (e.g. the end effector's x, y)"""
    workspace_action_index: Sequence[int] = ()
    """the action component that moves each watched coordinate (same order)"""
    workspace_low: Sequence[float] = ()
    """lower corner of the box, one value per watched coordinate"""
    workspace_high: Sequence[float] = ()
    """upper corner of the box"""
    stale_after_s: float = 0.1
    """an observation older than this (now - its timestamp) triggers a safe stop"""
    max_missed_deadlines: int = 3
    """consecutive missed control deadlines tolerated (each is an event) before a safe stop"""
    hold_action: Sequence[float] | None = None
    """the action that holds the robot still (default zeros: velocity control); a driver with
    ``hold_action(observation)`` (position control: the present position) overrides it"""

    def __post_init__(self) -> None:
        if self.action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {self.action_dim}")
        low, high = self.low, self.high
        if np.any(low > high) or np.any(low < -1) or np.any(high > 1):
            raise ValueError(
                f"action limits must satisfy -1 <= low <= high <= 1, got {low} .. {high}"
            )
        n = len(self.workspace_state_index)
        if not (
            len(self.workspace_action_index)
            == len(self.workspace_low)
            == len(self.workspace_high)
            == n
        ):
            raise ValueError(
                "workspace_state_index, workspace_action_index, workspace_low and "
                "workspace_high must have one entry per watched coordinate"
            )
        if self.delta is not None and np.any(self.delta <= 0):
            raise ValueError(f"max_delta must be > 0, got {self.max_delta}")
        if self.stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0, got {self.stale_after_s}")

    @property
    def low(self) -> np.ndarray:
        return _per_joint(self.action_low, -1.0, self.action_dim, "action_low")

    @property
    def high(self) -> np.ndarray:
        return _per_joint(self.action_high, 1.0, self.action_dim, "action_high")

    @property
    def delta(self) -> np.ndarray | None:
        if self.max_delta is None:
            return None
        return _per_joint(self.max_delta, 0.0, self.action_dim, "max_delta")

    @property
    def default_hold(self) -> np.ndarray:
        return np.clip(
            _per_joint(self.hold_action, 0.0, self.action_dim, "hold"), self.low, self.high
        )


def _per_joint(value: Any, default: float, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, default, np.float32)
    out = np.broadcast_to(np.asarray(value, np.float32), (n,)) if np.ndim(value) == 0 else None
    out = np.asarray(value if out is None else out, np.float32)
    if out.shape != (n,):
        raise ValueError(f"{name} has {out.shape[0]} entries, the robot has {n} action components")
    return out.copy()


@dataclass
class SafetyEvent:
    """One violation: what, when (monotonic s), and the offending value."""

    kind: str
    t: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "t": self.t, "detail": self.detail}


@dataclass
class _State:
    previous: np.ndarray | None = None
    observation: dict[str, np.ndarray] | None = None
    stopped: str | None = None  # why the safe stop is latched, or None
    missed_in_row: int = 0
    events: list[SafetyEvent] = field(default_factory=list)


class SafetyLayer:
    """Wraps a driver; see the module docstring. ``clock`` is injectable for tests."""

    def __init__(
        self, driver: Driver, config: SafetyConfig, clock: Callable[[], float] = time.monotonic
    ):
        self._driver = driver
        self.config = config
        self.clock = clock
        self._low, self._high, self._delta = config.low, config.high, config.delta
        self._ws_state = np.asarray(config.workspace_state_index, np.int64)
        self._ws_action = np.asarray(config.workspace_action_index, np.int64)
        self._ws_low = np.asarray(config.workspace_low, np.float32)
        self._ws_high = np.asarray(config.workspace_high, np.float32)
        self._s = _State()
        self.total_events: dict[str, int] = {}
        self._last_warning: dict[str, float] = {}
        self.last_stop: tuple[str, float] | None = None
        self.last_observation_time: float | None = None
        """(why, when) of the latest safe stop"""

    # ---------------------------------------------------------------- status

    @property
    def stopped(self) -> str | None:
        """Why the robot is held (``"estop"``, ``"stale_observation"``, ...), or None."""
        return self._s.stopped

    @property
    def is_connected(self) -> bool:
        return self._driver.is_connected

    def drain_events(self) -> list[dict[str, Any]]:
        """Events since the last call, as dicts (what ``info["safety_events"]`` carries)."""
        events, self._s.events = self._s.events, []
        return [e.to_dict() for e in events]

    def event(self, kind: str, detail: str = "") -> None:
        """Record an event (and latch a safe stop for the kinds in STOPPING)."""
        self._s.events.append(SafetyEvent(kind, self.clock(), detail))
        self.total_events[kind] = self.total_events.get(kind, 0) + 1
        # Clipping is routine (counted, reported); what stops or rejects is worth a warning,
        # at most one per kind and second so that a broken policy cannot flood the log.
        routine = kind in (JOINT_LIMIT, WORKSPACE, RATE_LIMIT)
        now = self.clock()
        if routine or now - self._last_warning.get(kind, -np.inf) < 1.0:
            log.debug("safety: %s %s", kind, detail)
        else:
            self._last_warning[kind] = now
            log.warning("safety: %s %s", kind, detail)
        if kind in STOPPING and self._s.stopped is None:
            self._s.stopped = kind
            self.last_stop = (kind, now)

    # ---------------------------------------------------------------- operator controls

    def estop(self, reason: str = "software e-stop") -> None:
        """Latch the software e-stop and hold the robot now."""
        self.event(ESTOP, reason)
        self._s.stopped = ESTOP
        self._write_hold()

    def clear_stop(self) -> None:
        """An operator's decision to resume; the next action starts from the hold action."""
        self._s.stopped = None
        self._s.missed_in_row = 0

    # ---------------------------------------------------------------- driver life cycle

    def connect(self) -> None:
        self._driver.connect()

    def disconnect(self) -> None:
        if self._driver.is_connected:
            self._write_hold()
            self._driver.disconnect()

    def reset_episode(self, **kwargs: Any) -> dict[str, np.ndarray]:
        """Start an episode: the driver's own reset when it has one (a simulator), otherwise
        the current observation (a person resets the scene on hardware)."""
        self._s.previous = None
        self._s.missed_in_row = 0
        reset = getattr(self._driver, "reset", None)
        try:
            obs = reset(**kwargs) if reset is not None else self._driver.read()
        except (ConnectionError, OSError, TimeoutError) as err:
            self.event(DRIVER_ERROR, f"reset: {err}")
            raise
        return self._check_observation(obs)

    # ---------------------------------------------------------------- the two paths

    def read(self) -> dict[str, np.ndarray]:
        """The driver's latest observation, checked for NaN/inf and for age."""
        try:
            obs = self._driver.read()
        except (ConnectionError, OSError, TimeoutError) as err:
            self.event(DRIVER_ERROR, f"read: {err}")
            raise
        return self._check_observation(obs)

    def write(self, action: Any) -> np.ndarray:
        """Make ``action`` safe, write it, return what reached the driver (float32 [A])."""
        safe = self.filter(action)
        try:
            applied = np.asarray(self._driver.write(safe), np.float32)
        except (ConnectionError, OSError, TimeoutError) as err:
            self.event(DRIVER_ERROR, f"write: {err}")
            raise
        self._s.previous = applied.copy()
        return applied

    def missed_deadline(self, late_s: float) -> None:
        """The control loop woke ``late_s`` after its deadline: an event; several in a row
        stop the robot (the loop can no longer keep it under control)."""
        self._s.missed_in_row += 1
        self.event(MISSED_DEADLINE, f"late by {1000 * late_s:.1f} ms")
        if self._s.missed_in_row > self.config.max_missed_deadlines:
            self._s.stopped = self._s.stopped or MISSED_DEADLINE

    def on_time(self) -> None:
        self._s.missed_in_row = 0

    # ---------------------------------------------------------------- checks

    def filter(self, action: Any) -> np.ndarray:
        """The safe version of ``action`` (without writing it)."""
        if self._s.stopped is not None:
            return self._hold()
        a = self._valid(action)
        if a is None:  # a bad action becomes the hold action, changed gently like any other
            a = self._hold()
        clipped = np.clip(a, self._low, self._high)
        if not np.array_equal(clipped, a):
            self.event(JOINT_LIMIT, f"{_short(a)} clipped to {_short(clipped)}")
        clipped = self._workspace(clipped)
        # The first action after a (re)start changes at most max_delta from standing still.
        previous = self._s.previous if self._s.previous is not None else self._hold()
        if self._delta is not None:
            limited = np.clip(clipped, previous - self._delta, previous + self._delta)
            if not np.array_equal(limited, clipped):
                self.event(RATE_LIMIT, f"{_short(clipped)} limited to {_short(limited)}")
            clipped = np.clip(limited, self._low, self._high)
        return clipped.astype(np.float32)

    def _valid(self, action: Any) -> np.ndarray | None:
        try:
            a = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError) as err:
            self.event(BAD_ACTION, f"not a number array: {err}")
            return None
        if a.shape != (self.config.action_dim,):
            self.event(BAD_ACTION, f"shape {a.shape}, expected ({self.config.action_dim},)")
            return None
        if not np.all(np.isfinite(a)):
            self.event(BAD_ACTION, f"NaN/inf at {np.flatnonzero(~np.isfinite(a)).tolist()}")
            return None
        return a

    def _workspace(self, a: np.ndarray) -> np.ndarray:
        obs = self._s.observation
        if not len(self._ws_state) or obs is None or keys.STATE not in obs:
            return a
        pos = np.asarray(obs[keys.STATE], np.float32)[self._ws_state]
        out = a.copy()
        above, below = pos >= self._ws_high, pos <= self._ws_low
        idx = self._ws_action
        out[idx[above]] = np.minimum(out[idx[above]], 0.0)  # no further out through the top
        out[idx[below]] = np.maximum(out[idx[below]], 0.0)
        if not np.array_equal(out, a):
            self.event(
                WORKSPACE, f"state {_short(pos)} at the box edge; {_short(a)} -> {_short(out)}"
            )
        return out

    def _check_observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = obs.get(keys.STATE)
        if state is not None and not np.all(np.isfinite(state)):
            self.event(BAD_OBSERVATION, f"state has NaN/inf: {_short(np.asarray(state))}")
        stamp = obs.get(TIMESTAMP)
        self.last_observation_time = None if stamp is None else float(stamp)
        if stamp is None:
            self.event(BAD_OBSERVATION, "no timestamp: the driver must stamp every observation")
        else:
            age = self.clock() - float(stamp)
            if age > self.config.stale_after_s or not math.isfinite(age):
                self.event(STALE_OBSERVATION, f"observation is {1000 * age:.0f} ms old")
        self._s.observation = obs
        return obs

    def hold_action(self) -> np.ndarray:
        """The action that holds the robot where it is."""
        return self._hold()

    def _hold(self) -> np.ndarray:
        hold = getattr(self._driver, "hold_action", None)
        if hold is not None and self._s.observation is not None:
            try:
                return np.clip(
                    np.asarray(hold(self._s.observation), np.float32), self._low, self._high
                )
            except (KeyError, ValueError):
                pass  # fall back to the configured hold
        return self.config.default_hold

    def _write_hold(self) -> None:
        if not self._driver.is_connected:
            return
        try:
            self._s.previous = np.asarray(self._driver.write(self._hold()), np.float32)
        except (ConnectionError, OSError, TimeoutError) as err:
            self.event(DRIVER_ERROR, f"hold: {err}")


def _short(x: np.ndarray) -> str:
    return np.array2string(np.asarray(x), precision=3, max_line_width=200, threshold=8)
