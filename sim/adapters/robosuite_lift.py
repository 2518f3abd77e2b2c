"""``robot_rl/RobosuiteLift-v0``: robosuite 1.5.2's ``Lift`` (Panda) behind robot_rl's contracts.

robosuite is imported only when an environment is built (``pip install 'robot-rl[robosuite]'``).
The arm runs robosuite's default BASIC composite controller (OSC_POSE arm, delta input scaled
to 5 cm and 0.5 rad per step at |action| = 1) at 20 Hz.

By default the action is restricted to 4 dims with zero rotation, because a top-down grasp of
a cube needs no wrist motion and both the scripted expert and RL learn faster without three
dimensions that can only hurt; ``rotation=True`` exposes the full 7-dim action.

Shapes::

    obs["state"]  float32 [19] = eef pos xyz, eef quat xyzw (robosuite's raw convention),
                                 gripper finger qpos [2], cube pos xyz, cube quat xyzw,
                                 gripper-to-cube xyz
    obs["image.<cam>"] uint8 [S, S, 3]   robosuite cameras, e.g. "agentview", flipped upright
    action        float32 [4] = dpos xyz, gripper (-1 open, +1 close)   (rotation=False)
                  float32 [7] = dpos xyz, drot xyz, gripper             (rotation=True)
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.core import keys
from robot_rl.core.policy import Observation
from robot_rl.core.task import ScriptedExpert
from sim.tasks.base import check_task_options, use_fast_visuals

STATE_KEYS = (
    "robot0_eef_pos",
    "robot0_eef_quat",
    "robot0_gripper_qpos",
    "cube_pos",
    "cube_quat",
    "gripper_to_cube_pos",
)
STATE_DIM = 19
CONTROL_FREQ = 20
OSC_MAX_DELTA = 0.05
"""m of set-point motion per step at |action| = 1 (robosuite's OSC_POSE output_max)"""


class _QuietRobosuite(logging.Filter):
    """Drops robosuite's INFO chatter and its import-time warnings about optional extras
    (robosuite_models, mink) that Lift with a Panda never needs."""

    OPTIONAL = ("Could not import robosuite_models", "Could not load the mink-based")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        return not str(record.msg).startswith(self.OPTIONAL)


def import_robosuite() -> Any:
    """Import robosuite with its log noise filtered, or fail naming the extra to install."""
    logging.getLogger("robosuite_logs").addFilter(_QuietRobosuite())
    try:
        import robosuite
    except ImportError as err:
        raise ImportError(
            "robot_rl/RobosuiteLift-v0 needs robosuite: pip install 'robot-rl[robosuite]' "
            f"(robosuite==1.5.2 with mujoco<=3.9.0, numpy<2); import failed with: {err}"
        ) from err
    return robosuite


def _rebuild_fast_offscreen(sim: Any) -> None:
    """robosuite made its offscreen context before we could switch multisampling off; remake
    it, and turn shadows and reflections off in its scene (~40 -> ~60 frames/s at 84x84 here;
    the Panda's detailed meshes are the rest of the cost). Relies on robosuite 1.5.2's
    ``MjRenderContext`` internals, which the pinned version guarantees."""
    import mujoco

    context = sim._render_context_offscreen
    context.gl_ctx.make_current()
    context.con.free()
    context._set_mujoco_context_and_buffers()
    context.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False


class RobosuiteLiftEnv(gym.Env):
    """robosuite ``Lift`` with a Panda; see the module docstring for the shape contracts.

    ``reward_type="dense"`` is robosuite's shaped reward scaled to [0, 1] (reach, grasp, 1 on
    success); ``"sparse"`` is 1.0 on success, else 0.0. Success is ``env._check_success()``
    (cube centre 4 cm above the table).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(
        self,
        reward_type: str = "dense",
        cameras: tuple[str, ...] = (),
        image_size: int = 84,
        render_mode: str | None = None,
        terminate_on_success: bool = True,
        rotation: bool = False,
        render_camera: str = "frontview",
        render_size: int = 128,
    ):
        check_task_options(reward_type, render_mode, image_size)
        robosuite = import_robosuite()
        from robosuite.controllers import load_composite_controller_config

        self.reward_type = reward_type
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self.rotation = rotation
        self.render_camera = render_camera
        self.render_size = render_size
        offscreen = bool(self.cameras) or render_mode == "rgb_array"
        self._env = robosuite.make(
            "Lift",
            robots="Panda",
            controller_configs=load_composite_controller_config(controller="BASIC", robot="Panda"),
            has_renderer=False,
            has_offscreen_renderer=offscreen,
            use_camera_obs=bool(self.cameras),
            camera_names=list(self.cameras) or "agentview",
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            reward_shaping=True,  # sparse rewards come from _check_success() in step()
            reward_scale=1.0,
            control_freq=CONTROL_FREQ,
            # gymnasium's TimeLimit ends episodes; robosuite must never refuse a step.
            horizon=10**9,
            ignore_done=True,
            # A soft reset keeps the compiled model: a hard one rebuilds it (~100 ms) per episode.
            hard_reset=False,
            seed=0,  # fixes the cube's randomised size; reset(seed=...) reseeds placements
        )
        use_fast_visuals(self._env.sim.model._model)
        if offscreen:
            _rebuild_fast_offscreen(self._env.sim)
        self._raw: dict[str, np.ndarray] = {}

        obs_spaces: dict[str, spaces.Space] = {
            keys.STATE: spaces.Box(-np.inf, np.inf, shape=(STATE_DIM,), dtype=np.float32)
        }
        for camera in self.cameras:
            obs_spaces[keys.image_key(camera)] = spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8
            )
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(7 if rotation else 4,), dtype=np.float32)
        self._full_action = np.zeros(7, dtype=np.float64)

    # -- privileged state for experts and tests -----------------------------------------

    @property
    def eef_pos(self) -> np.ndarray:
        """End-effector (grip site) position ``[3]``, world frame, at the last observation."""
        return self._raw["robot0_eef_pos"]

    @property
    def cube_pos(self) -> np.ndarray:
        """Cube centre ``[3]``, world frame, at the last observation."""
        return self._raw["cube_pos"]

    # -- gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        # robosuite draws the cube placement and the arm's initial-joint noise from env.rng;
        # handing it gymnasium's generator makes reset(seed=...) reproducible.
        self._env.rng = self.np_random
        self._env.placement_initializer.rng = self.np_random
        self._raw = self._env.reset()
        return self._observation(), {keys.IS_SUCCESS: bool(self._env._check_success())}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        full = self._full_action
        if self.rotation:
            full[:] = action
        else:
            full[0:3] = action[0:3]
            full[6] = action[3]
        self._raw, shaped, _, _ = self._env.step(full)
        success = bool(self._env._check_success())
        reward = float(shaped) if self.reward_type == "dense" else float(success)
        terminated = success and self.terminate_on_success
        return self._observation(), reward, terminated, False, {keys.IS_SUCCESS: success}

    def render(self) -> np.ndarray | None:
        """``uint8 [render_size, render_size, 3]`` from ``render_camera`` in rgb_array mode."""
        if self.render_mode != "rgb_array":
            return None
        frame = self._env.sim.render(
            camera_name=self.render_camera, width=self.render_size, height=self.render_size
        )
        return np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    def _observation(self) -> dict[str, np.ndarray]:
        raw = self._raw
        obs = {keys.STATE: np.concatenate([raw[k] for k in STATE_KEYS]).astype(np.float32)}
        for camera in self.cameras:
            # robosuite renders in OpenGL's convention, bottom row first.
            obs[keys.image_key(camera)] = np.ascontiguousarray(raw[f"{camera}_image"][::-1])
        return obs


class RobosuiteLiftExpert(ScriptedExpert):
    """Move above the cube, descend, close, lift; reads the adapter's last raw observation.

    Suboptimal episodes (probability ``quality.suboptimal_prob``) run one of:
    ``"misaligned"`` grasp 2.5-4 cm off the cube centre, ``"hasty_lift"`` lift after one or
    two steps of closing, before the fingers grip, ``"slow"`` move at 10-20% speed.
    (Lift-v0's "early release" does not fail here: the Panda's fingers open more slowly than
    the arm lifts the cube the 2 cm that robosuite's success check asks for.)
    """

    SUBOPTIMAL_MODES = ("misaligned", "hasty_lift", "slow")
    HOVER = 0.08  # m above the cube before descending
    LIFT = 0.12  # m to lift the cube above its resting height
    CLOSE_STEPS = 8  # 0.4 s at 20 Hz for the Panda fingers to close
    GAIN = 12.0  # action per metre of set-point error; OSC_POSE lags its set-point

    mode: str | None = None
    """this episode's suboptimal mode, or None"""
    phase: str = "above"
    """above -> descend -> close -> lift"""

    def reset(self) -> None:
        adapter: RobosuiteLiftEnv = self.env.unwrapped
        self.phase = "above"
        self._closed_for = 0
        self._rest_z = float(adapter.cube_pos[2])
        self.mode = None
        if self.rng.random() < self.quality.suboptimal_prob:
            self.mode = str(self.rng.choice(self.SUBOPTIMAL_MODES))
        angle = self.rng.uniform(-np.pi, np.pi)
        dist = self.rng.uniform(0.025, 0.04) if self.mode == "misaligned" else 0.0
        self._offset = np.array([dist * np.cos(angle), dist * np.sin(angle), 0.0])
        self._speed = self.rng.uniform(0.1, 0.2) if self.mode == "slow" else 1.0
        self._close_steps = self.CLOSE_STEPS
        if self.mode == "hasty_lift":
            self._close_steps = int(self.rng.integers(0, 2))  # lift after 1-2 closing steps

    def act(self, obs: Observation) -> np.ndarray:
        """Normalised ``float32 [4]`` (or ``[7]`` with zero rotation); ``obs`` is unused."""
        adapter: RobosuiteLiftEnv = self.env.unwrapped
        eef, cube = adapter.eef_pos.copy(), adapter.cube_pos.copy()
        target = cube + self._offset
        gripper = -1.0
        if self.phase == "above":
            target[2] = cube[2] + self.HOVER
            if np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target[2] = cube[2] - 0.005
            if abs(target[2] - eef[2]) < 0.01:
                self.phase = "close"
        if self.phase == "close":
            target, gripper = eef, 1.0
            self._closed_for += 1
            if self._closed_for > self._close_steps:
                self.phase = "lift"
        if self.phase == "lift":
            target = np.array([eef[0], eef[1], self._rest_z + self.LIFT])
            gripper = 1.0
        move = np.clip(self.GAIN * (target - eef), -1.0, 1.0) * self._speed
        action = np.zeros(adapter.action_space.shape[0])
        action[0:3] = move
        action[-1] = gripper
        return self.noisy(action)
