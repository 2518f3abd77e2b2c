"""``robot_rl/Lift-v0``: grasp a cube with a parallel gripper on a Cartesian gantry and lift it.

The carriage moves on x/y/z slides (velocity servos, gravity compensated); two fingers close
along x (position servos with a 4 N force cap, friction 1.5 on the pads), so a grasp holds
the 100 g cube by friction, as a real one would.

Shapes::

    obs["state"]  float32 [17] = grasp point xyz, its velocity xyz, finger opening (m, per
                                 finger), cube xyz, cube quaternion wxyz, cube - grasp point xyz
    obs["image.<cam>"] uint8 [S, S, 3]   cameras: "front", "side", "top"
    action        float32 [4]  = carriage velocity xyz / MAX_SPEED, gripper (-1 open, +1 closed)

Control at 10 Hz (8 physics steps of 12.5 ms); episodes are at most 50 steps. Success: the cube
held between the pads with its centre at least ``LIFT_HEIGHT`` above the table.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.core.policy import Observation
from robot_rl.core.task import ScriptedExpert
from sim.tasks.base import MujocoTaskEnv

MAX_SPEED = 0.25
"""m/s of the carriage along each axis at |action| = 1"""
FINGER_OPEN = 0.05
"""pad inner face to centre line (m) when fully open; 0 is fully closed"""
CUBE_HALF = 0.02
LIFT_HEIGHT = 0.08
"""success: cube centre above this height (m); it rests at 0.02"""


class LiftEnv(MujocoTaskEnv):
    """Grasp and lift a cube. See the module docstring for the shape contracts."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    asset = "lift.xml"
    frame_skip = 8
    state_dim = 17
    action_dim = 4
    render_camera = "front"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._grip_q = self._joint_slice("grip_x", "grip_y", "grip_z", dof=False)
        self._grip_v = self._joint_slice("grip_x", "grip_y", "grip_z", dof=True)
        self._fingers_q = self._joint_slice("finger_left", "finger_right", dof=False)
        cube_adr = int(self.model.joint("cube").qposadr[0])
        self._cube_pos = slice(cube_adr, cube_adr + 3)
        self._cube_quat = slice(cube_adr + 3, cube_adr + 7)

    # -- privileged state for experts and tests -----------------------------------------

    @property
    def grasp_pos(self) -> np.ndarray:
        """A view ``[3]`` of the grasp point (between the pad centres), world frame."""
        return self.data.qpos[self._grip_q]

    @property
    def cube_pos(self) -> np.ndarray:
        """A view ``[3]`` of the cube centre, world frame."""
        return self.data.qpos[self._cube_pos]

    @property
    def finger_opening(self) -> float:
        """Mean pad-to-centre-line distance of the two fingers, in m."""
        left, right = self.data.qpos[self._fingers_q].tolist()
        return 0.5 * (left + right)

    def is_grasped(self) -> bool:
        """The cube centred between the pads and both pads pressed against it."""
        gx, gy, gz = self.data.qpos[self._grip_q].tolist()
        cx, cy, cz = self.data.qpos[self._cube_pos].tolist()
        left, right = self.data.qpos[self._fingers_q].tolist()
        between = abs(cx - gx) < 0.02 and abs(cy - gy) < 0.02 and abs(cz - gz) < 0.025
        # A closed-on-nothing finger reaches 0; one blocked by the cube stays near its half-width
        # (a corner grasp of a turned cube stops it a little wider).
        pressed = 0.012 < left < 0.03 and 0.012 < right < 0.03
        return between and pressed

    # -- hooks ---------------------------------------------------------------------------

    def _reset_task(self) -> None:
        rng = self.np_random
        qpos = self.data.qpos
        qpos[self._grip_q] = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), 0.15)
        qpos[self._fingers_q] = FINGER_OPEN
        self.data.ctrl[3:5] = FINGER_OPEN
        qpos[self._cube_pos] = (rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), CUBE_HALF)
        # Yaw within +-0.4 rad: the gantry has no wrist, and flat pads square up a cube turned
        # this far as they close, but not one turned near 45 degrees.
        yaw = rng.uniform(-0.4, 0.4)
        qpos[self._cube_quat] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def _apply_action(self, action: np.ndarray) -> None:
        ctrl = self.data.ctrl
        ctrl[0:3] = action[0:3] * MAX_SPEED
        ctrl[3:5] = FINGER_OPEN * 0.5 * (1.0 - float(action[3]))

    def _state(self) -> np.ndarray:
        qpos, qvel = self.data.qpos, self.data.qvel
        state = np.empty(self.state_dim, dtype=np.float32)
        state[0:3] = qpos[self._grip_q]
        state[3:6] = qvel[self._grip_v]
        state[6] = self.finger_opening
        state[7:10] = qpos[self._cube_pos]
        state[10:14] = qpos[self._cube_quat]
        state[14:17] = state[7:10] - state[0:3]
        return state

    def _success(self) -> bool:
        return float(self.data.qpos[self._cube_pos.start + 2]) > LIFT_HEIGHT and self.is_grasped()

    def _dense_reward(self, success: bool) -> float:
        if success:
            return 1.0  # the maximum: no shaped state is worth more than finishing
        gx, gy, gz = self.data.qpos[self._grip_q].tolist()
        cx, cy, cz = self.data.qpos[self._cube_pos].tolist()
        # 0.2: the grasp point near the cube (reaching comes first and is easy to learn)
        reach = 0.2 * (1.0 - math.tanh(10.0 * math.dist((gx, gy, gz), (cx, cy, cz))))
        grasped = self.is_grasped()
        # 0.2: holding it; 0.4: its height, counted only while held, so that flicking the
        # cube upwards earns nothing
        hold = 0.2 if grasped else 0.0
        height = min(max((cz - CUBE_HALF) / (LIFT_HEIGHT - CUBE_HALF), 0.0), 1.0)
        lift = 0.4 * height if grasped else 0.0
        return reach + hold + lift


class LiftExpert(ScriptedExpert):
    """Move above the cube, descend open, close, lift.

    Suboptimal episodes (probability ``quality.suboptimal_prob``) run one of:
    ``"misaligned"`` grasp 2.2-3.5 cm off the cube centre (the pads catch an edge or nothing),
    ``"early_release"`` open the gripper part-way up,
    ``"slow"`` move at 12-25% speed and run out of time.
    """

    SUBOPTIMAL_MODES = ("misaligned", "early_release", "slow")
    HOVER = 0.07  # m above the cube centre before descending
    LIFT_TO = 0.13  # grasp-point height to lift to, comfortably above LIFT_HEIGHT
    CLOSE_STEPS = 3  # 0.3 s for the pads to close and squeeze

    mode: str | None = None
    """this episode's suboptimal mode, or None"""
    phase: str = "above"
    """above -> descend -> close -> lift"""

    def reset(self) -> None:
        self.phase = "above"
        self._closed_for = 0
        self.mode = None
        if self.rng.random() < self.quality.suboptimal_prob:
            self.mode = str(self.rng.choice(self.SUBOPTIMAL_MODES))
        angle = self.rng.uniform(-np.pi, np.pi)
        dist = self.rng.uniform(0.022, 0.035) if self.mode == "misaligned" else 0.0
        self._grasp_offset = np.array([dist * np.cos(angle), dist * np.sin(angle), 0.0])
        self._speed = self.rng.uniform(0.12, 0.25) if self.mode == "slow" else 1.0
        self._release_height = self.rng.uniform(0.03, 0.05)

    def act(self, obs: Observation) -> np.ndarray:
        """Normalised ``float32 [4]``: carriage velocity xyz, gripper; ``obs`` is unused."""
        env: LiftEnv = self.env.unwrapped
        grasp, cube = env.grasp_pos.copy(), env.cube_pos.copy()
        target = cube + self._grasp_offset
        if self.phase == "above":
            target[2] = cube[2] + self.HOVER
            gripper = -1.0
            if np.linalg.norm((target - grasp)[:2]) < 0.006 and abs(target[2] - grasp[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target[2] = cube[2] + 0.002
            gripper = -1.0
            if abs(target[2] - grasp[2]) < 0.006:
                self.phase = "close"
        if self.phase == "close":
            target = grasp  # hold still while the pads close
            gripper = 1.0
            self._closed_for += 1
            if self._closed_for > self.CLOSE_STEPS:
                self.phase = "lift"
        if self.phase == "lift":
            target = np.array([grasp[0], grasp[1], self.LIFT_TO])
            released = self.mode == "early_release" and grasp[2] > self._release_height
            gripper = -1.0 if released else 1.0
        velocity = np.clip(6.0 * (target - grasp) / MAX_SPEED, -1.0, 1.0) * self._speed
        return self.noisy(np.append(velocity, gripper))
