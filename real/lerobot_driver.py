"""Any robot LeRobot supports (SO-100/101, Koch, ...) behind the driver protocol, through
LeRobot's own ``Robot`` classes: ``connect / get_observation / send_action``.

Normalisation: each action component ``a`` in [-1, 1] is one motor feature of the robot
(``"shoulder_pan.pos"``, ...) mapped linearly onto its ``joint_ranges`` entry, in LeRobot's
units (degrees, or 0-100 for a gripper); the state is the present positions mapped back the
same way, so a position-controlled arm holds still with ``hold_action = state``. LeRobot's
``max_relative_target`` clamp still applies below us; ``write`` returns what LeRobot really
sent, normalised.

LeRobot has no sensor timestamps; observations are stamped with the monotonic time at which
``get_observation`` was called (the conservative side for the staleness watchdog).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from robot_rl.core import keys
from robot_rl.core.driver import TIMESTAMP
from robot_rl.lerobot_compat import LEROBOT_INSTALL, import_torchvision


def import_lerobot_robots():
    """``(RobotConfig, make_robot_from_config)`` from LeRobot, or an ImportError naming the
    install command."""
    try:
        import_torchvision()
        from lerobot.robots import RobotConfig
        from lerobot.robots.utils import make_robot_from_config
    except ImportError as err:
        raise ImportError(
            f"the LeRobot driver needs lerobot ({err}); install it: {LEROBOT_INSTALL}"
        ) from err
    return RobotConfig, make_robot_from_config


def make_lerobot_robot(robot_type: str, **fields: Any):
    """A LeRobot robot from its registered type name (``"so101_follower"``) and config fields."""
    robot_config, make_robot = import_lerobot_robots()
    if robot_type not in robot_config.get_known_choices():
        _import_robot_packages()  # each robot's config registers its type name on import
    try:
        config_class = robot_config.get_choice_class(robot_type)
    except (KeyError, ValueError) as err:
        known = sorted(robot_config.get_known_choices())
        raise KeyError(f"unknown LeRobot robot type {robot_type!r}; known: {known}") from err
    return make_robot(config_class(**fields))


def _import_robot_packages() -> None:
    import lerobot.robots

    for module in pkgutil.iter_modules(lerobot.robots.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"lerobot.robots.{module.name}")
            except ImportError:
                pass  # a robot whose SDK is not installed: not one the user asked for


class LeRobotDriver:
    """Driver protocol over a LeRobot ``Robot``; see the module docstring."""

    def __init__(
        self,
        robot_type: str | None = None,
        robot: Mapping[str, Any] | Any = None,
        joint_ranges: Mapping[str, Sequence[float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``robot``: the config fields of ``robot_type`` (a dict), or a LeRobot ``Robot``."""
        if robot is None or (isinstance(robot, Mapping) and robot_type is None):
            raise ValueError("give robot_type plus its config fields, or a LeRobot Robot instance")
        self._robot_type, self._robot_arg = robot_type, robot
        self._ranges_arg = dict(joint_ranges or {})
        self.clock = clock
        self.robot = None
        self.features: list[str] = []
        self.cameras: list[str] = []

    @property
    def is_connected(self) -> bool:
        return self.robot is not None and bool(self.robot.is_connected)

    def connect(self) -> None:
        if self.is_connected:
            return
        if self.robot is None:
            if isinstance(self._robot_arg, Mapping):
                self.robot = make_lerobot_robot(self._robot_type, **self._robot_arg)
            else:
                self.robot = self._robot_arg
            self._set_features()
        # Never calibrate interactively from a daemon: LeRobot would wait on input().
        self.robot.connect(calibrate=False)
        if not self.robot.is_calibrated:
            self._write_saved_calibration()

    def _set_features(self) -> None:
        action = dict(self.robot.action_features)
        self.features = [k for k, v in action.items() if v is float]
        obs = dict(self.robot.observation_features)
        self.cameras = [k for k, v in obs.items() if isinstance(v, tuple)]
        ranges = {k: self._ranges_arg.get(k, _default_range(k)) for k in self.features}
        unknown = sorted(set(self._ranges_arg) - set(self.features))
        if unknown:
            raise KeyError(f"joint_ranges names {unknown}; the robot's features: {self.features}")
        self._low = np.array([ranges[k][0] for k in self.features], np.float64)
        self._high = np.array([ranges[k][1] for k in self.features], np.float64)
        if np.any(self._high <= self._low):
            raise ValueError(f"every joint range needs low < high, got {ranges}")

    def _write_saved_calibration(self) -> None:
        calibration = getattr(self.robot, "calibration", None)
        bus = getattr(self.robot, "bus", None)
        if calibration and bus is not None:
            # What LeRobot does when the operator accepts the saved file (ENTER).
            bus.write_calibration(calibration)
            if self.robot.is_calibrated:
                return
        self.robot.disconnect()
        raise ConnectionError(
            f"{self.robot} is not calibrated and has no matching calibration file "
            f"({getattr(self.robot, 'calibration_fpath', '?')}); calibrate it once with "
            "LeRobot (lerobot-calibrate) before serving"
        )

    @property
    def action_dim(self) -> int:
        return len(self.features)

    def read(self) -> dict[str, np.ndarray]:
        self._check()
        stamp = self.clock()
        raw = self._call(self.robot.get_observation)
        obs = {
            keys.STATE: self.normalise([raw[k] for k in self.features]),
            TIMESTAMP: np.float64(stamp),
        }
        for cam in self.cameras:
            obs[keys.image_key(cam)] = np.asarray(raw[cam], np.uint8)
        return obs

    def write(self, action: np.ndarray) -> np.ndarray:
        self._check()
        target = self.denormalise(action)
        sent = self._call(
            self.robot.send_action, dict(zip(self.features, target.tolist(), strict=True))
        )
        return self.normalise([sent.get(k, t) for k, t in zip(self.features, target, strict=True)])

    def hold_action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Position control: the present position holds the arm still."""
        return np.asarray(observation[keys.STATE], np.float32)[: self.action_dim]

    def disconnect(self) -> None:
        if self.is_connected:
            self.robot.disconnect()

    def normalise(self, values: Sequence[float]) -> np.ndarray:
        v = np.asarray(values, np.float64)
        return (2 * (v - self._low) / (self._high - self._low) - 1).astype(np.float32)

    def denormalise(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        return self._low + (a + 1) / 2 * (self._high - self._low)

    def _check(self) -> None:
        if not self.is_connected:
            raise ConnectionError(
                f"LeRobot robot {self._robot_type or self.robot} is not connected"
            )

    def _call(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except ConnectionError:
            raise
        except (OSError, RuntimeError) as err:  # serial errors, LeRobot's device errors
            raise ConnectionError(f"{self.robot}: {type(err).__name__}: {err}") from err


def _default_range(feature: str) -> tuple[float, float]:
    """LeRobot's default units: grippers 0-100, other joints in degrees (+-180 would cover a
    full turn; +-100 matches RANGE_M100_100 arms too)."""
    return (0.0, 100.0) if "gripper" in feature else (-100.0, 100.0)
