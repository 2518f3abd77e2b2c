"""gymnasium's own MuJoCo environments behind robot_rl's contracts.

``robot_rl/GymReacher-v0`` wraps ``Reacher-v5`` and ``robot_rl/GymPusher-v0`` wraps
``Pusher-v5``. The inner Box observation becomes ``{"state": float32 [D]}``; actions in
[-1, 1] are rescaled to the inner action box; a per-environment success predicate supplies
``info["is_success"]``, which the inner environments lack:

- Reacher: fingertip to target distance < 0.02 m (the target disc's radius is 0.009 m and the
  arm spans 0.21 m, so 2 cm is a clear reach without demanding sub-millimetre settling);
- Pusher: object to goal distance < 0.05 m in the table plane (x, y). The goal body sits 4.8 cm
  lower than the object's, so gymnasium's 3-D distance never drops below that offset.

Shapes::

    Reacher: obs["state"] float32 [10], action float32 [2]; 50 steps at 50 Hz
    Pusher:  obs["state"] float32 [23], action float32 [7]; 100 steps at 20 Hz
    obs["image.<cam>"] uint8 [S, S, 3]   cameras: Reacher "top", Pusher "front" / "top"

Images are rendered with our own fast offscreen renderer on the inner model and data (no
shadows or multisampling, any camera preset, several cameras per step) rather than through
the inner environment's single-camera ``render()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco import MujocoEnv

from robot_rl.core import keys
from robot_rl.core.policy import Observation
from robot_rl.core.task import ScriptedExpert
from sim.tasks.base import FastRenderer, check_task_options, use_fast_visuals

REACHER_SUCCESS_DIST = 0.02
PUSHER_SUCCESS_DIST = 0.05


def reacher_success(env: MujocoEnv) -> bool:
    gap = env.data.body("fingertip").xpos - env.data.body("target").xpos
    return float(np.linalg.norm(gap[:2])) < REACHER_SUCCESS_DIST


def pusher_success(env: MujocoEnv) -> bool:
    gap = env.data.body("object").xpos - env.data.body("goal").xpos
    return float(np.linalg.norm(gap[:2])) < PUSHER_SUCCESS_DIST


@dataclass(frozen=True)
class CameraPreset:
    """A free camera: what it looks at, from how far and from which direction (degrees)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float

    def to_mjv(self) -> mujoco.MjvCamera:
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        camera.lookat[:] = self.lookat
        camera.distance = self.distance
        camera.azimuth = self.azimuth
        camera.elevation = self.elevation
        return camera


@dataclass(frozen=True)
class GymTaskSpec:
    """How one inner gymnasium id becomes a robot_rl task."""

    success: Callable[[MujocoEnv], bool]
    cameras: dict[str, CameraPreset] = field(default_factory=dict)
    """camera name -> preset; the first is the ``render()`` camera"""


SPECS: dict[str, GymTaskSpec] = {
    "Reacher-v5": GymTaskSpec(
        success=reacher_success,
        cameras={"top": CameraPreset((0.0, 0.0, 0.0), 0.55, 90.0, -90.0)},
    ),
    "Pusher-v5": GymTaskSpec(
        success=pusher_success,
        cameras={
            "front": CameraPreset((0.4, -0.3, -0.3), 1.5, 135.0, -45.0),
            "top": CameraPreset((0.35, -0.35, -0.3), 1.6, 90.0, -90.0),
        },
    ),
}


class GymMujocoEnv(gym.Env):
    """A gymnasium MuJoCo environment (``inner_id``, one of ``SPECS``) under robot_rl's
    contracts; see the module docstring for shapes and success thresholds.

    ``reward_type="dense"`` is the inner environment's own reward; ``"sparse"`` is 1.0 on
    success, else 0.0.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        inner_id: str,
        reward_type: str = "dense",
        cameras: tuple[str, ...] = (),
        image_size: int = 84,
        render_mode: str | None = None,
        terminate_on_success: bool = True,
        render_size: int = 128,
    ):
        if inner_id not in SPECS:
            raise ValueError(f"no robot_rl spec for {inner_id!r}; known: {sorted(SPECS)}")
        check_task_options(reward_type, render_mode, image_size)
        self.task_spec = SPECS[inner_id]
        unknown = [c for c in cameras if c not in self.task_spec.cameras]
        if unknown:
            raise ValueError(
                f"unknown cameras {unknown} for {inner_id}; known: {list(self.task_spec.cameras)}"
            )
        # .unwrapped: our TimeLimit (registered with the inner limit) replaces the inner one.
        self.inner: MujocoEnv = gym.make(inner_id).unwrapped
        self.inner_id = inner_id
        self.reward_type = reward_type
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self.render_size = render_size
        fps = self.inner.metadata["render_fps"]
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": fps}
        use_fast_visuals(self.inner.model)
        self._renderer = FastRenderer(self.inner.model, self.inner.data)
        self._mjv_cameras = {name: p.to_mjv() for name, p in self.task_spec.cameras.items()}

        inner_space = self.inner.observation_space
        obs_spaces: dict[str, spaces.Space] = {
            keys.STATE: spaces.Box(-np.inf, np.inf, shape=inner_space.shape, dtype=np.float32)
        }
        for camera in self.cameras:
            obs_spaces[keys.image_key(camera)] = spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8
            )
        self.observation_space = spaces.Dict(obs_spaces)
        inner_action = self.inner.action_space
        self.action_space = spaces.Box(-1.0, 1.0, shape=inner_action.shape, dtype=np.float32)
        self._action_mid = (inner_action.high + inner_action.low) / 2.0
        self._action_half = (inner_action.high - inner_action.low) / 2.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        inner_obs, _ = self.inner.reset(seed=seed, options=options)
        return self._observation(inner_obs), {keys.IS_SUCCESS: self.task_spec.success(self.inner)}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        inner_action = self._action_mid + self._action_half * action
        inner_obs, inner_reward, inner_terminated, _, _ = self.inner.step(inner_action)
        success = self.task_spec.success(self.inner)
        reward = float(inner_reward) if self.reward_type == "dense" else float(success)
        terminated = bool(inner_terminated) or (success and self.terminate_on_success)
        return self._observation(inner_obs), reward, terminated, False, {keys.IS_SUCCESS: success}

    def render(self) -> np.ndarray | None:
        """``uint8 [render_size, render_size, 3]`` from the first camera preset."""
        if self.render_mode != "rgb_array":
            return None
        first = next(iter(self._mjv_cameras.values()))
        return self._renderer.render(first, self.render_size)

    def close(self) -> None:
        self._renderer.close()
        self.inner.close()

    def _observation(self, inner_obs: np.ndarray) -> dict[str, np.ndarray]:
        obs = {keys.STATE: inner_obs.astype(np.float32)}
        for camera in self.cameras:
            obs[keys.image_key(camera)] = self._renderer.render(
                self._mjv_cameras[camera], self.image_size
            )
        return obs


class GymReacherExpert(ScriptedExpert):
    """Resolved-rate control of the fingertip (privileged state): the joint velocity that moves
    the tip towards the target, ``v = J^T (J J^T + lambda I)^-1 k e``, tracked by a torque
    ``kv (v - qdot)``. Damped least squares stays well behaved near the straight-arm
    singularity, where plain Jacobian-transpose control crawls.

    Suboptimal episodes (probability ``quality.suboptimal_prob``) run one of:
    ``"misaim"`` aim 3-5 cm beside the target, ``"sluggish"`` a tenth of the gain (too slow
    for the 50-step limit), ``"overshoot"`` a gain so high that the tip oscillates.
    """

    SUBOPTIMAL_MODES = ("misaim", "sluggish", "overshoot")
    K = 10.0  # 1/s: fingertip error -> desired fingertip speed
    KV = 1.0  # normalised torque per rad/s of joint-velocity error
    DAMPING = 1e-3  # lambda of the damped least squares, in m^2

    mode: str | None = None
    """this episode's suboptimal mode, or None"""

    def reset(self) -> None:
        self._jacp = np.zeros((3, self.env.unwrapped.inner.model.nv))
        self.mode = None
        if self.rng.random() < self.quality.suboptimal_prob:
            self.mode = str(self.rng.choice(self.SUBOPTIMAL_MODES))
        angle = self.rng.uniform(-np.pi, np.pi)
        dist = self.rng.uniform(0.03, 0.05) if self.mode == "misaim" else 0.0
        self._aim = np.array([dist * np.cos(angle), dist * np.sin(angle)])
        self._k = {"sluggish": 0.1 * self.K, "overshoot": 6.0 * self.K}.get(self.mode, self.K)

    def act(self, obs: Observation) -> np.ndarray:
        """Normalised joint torques ``float32 [2]``; ``obs`` is unused (privileged state)."""
        inner = self.env.unwrapped.inner
        model, data = inner.model, inner.data
        error = data.body("target").xpos[:2] + self._aim - data.body("fingertip").xpos[:2]
        mujoco.mj_jacBody(model, data, self._jacp, None, model.body("fingertip").id)
        jac = self._jacp[:2, :2]
        tip_speed = np.linalg.solve(jac @ jac.T + self.DAMPING * np.eye(2), self._k * error)
        joint_speed = jac.T @ tip_speed
        return self.noisy(self.KV * (joint_speed - data.qvel[:2]))
