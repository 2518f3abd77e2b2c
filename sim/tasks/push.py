"""``robot_rl/Push-v0``: planar pushing into either of two goal zones (the default task).

A pusher sphere (x/y velocity servos) pushes a 8 cm box from a random pose in the middle of
the table into the left or the right goal zone; either counts as success. Demonstrations are
therefore bimodal: an expert that goes around the box's right side to push it left and one
that goes around its left side to push it right are both correct, and a unimodal Gaussian
policy that averages them walks into the box from below and fails.

Shapes::

    obs["state"]  float32 [10] = pusher xy, pusher vxy, object xy, sin yaw, cos yaw, object vxy
    obs["image.<cam>"] uint8 [S, S, 3]   cameras: "top", "front"
    action        float32 [2]  = pusher target velocity / MAX_SPEED, in [-1, 1]

Control at 10 Hz (10 physics steps of 10 ms); episodes are at most 50 steps.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.core.policy import Observation
from robot_rl.core.task import ScriptedExpert
from sim.tasks.base import MujocoTaskEnv

MAX_SPEED = 0.5
"""m/s of the pusher at |action| = 1"""
GOAL_RADIUS = 0.03
"""success: the object's centre within this distance (m) of a goal centre"""
CONTACT_DIST = 0.06
"""pusher centre to object centre when touching a face (box half-size + sphere radius)"""


class PushEnv(MujocoTaskEnv):
    """Push a box into either goal zone. See the module docstring for the shape contracts."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    asset = "push.xml"
    frame_skip = 10
    state_dim = 10
    action_dim = 2
    render_camera = "top"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Contiguous slices, not index arrays: a slice is a view, so a step allocates little.
        self._pusher_q = self._joint_slice("pusher_x", "pusher_y", dof=False)
        self._pusher_v = self._joint_slice("pusher_x", "pusher_y", dof=True)
        self._object_q = self._joint_slice("object_x", "object_y", dof=False)
        self._object_v = self._joint_slice("object_x", "object_y", dof=True)
        self._yaw_q = int(self.model.joint("object_yaw").qposadr[0])
        self.goals = np.stack(
            [self.model.site(n).pos[:2].copy() for n in ("goal_left", "goal_right")]
        )
        """goal centres, float64 [2, 2]: row 0 left, row 1 right"""
        self._goal_list = [tuple(map(float, g)) for g in self.goals]

    # -- privileged state for experts and tests -----------------------------------------

    @property
    def pusher_pos(self) -> np.ndarray:
        """A view ``[2]`` of the pusher's x, y; copy it to keep it past the next step."""
        return self.data.qpos[self._pusher_q]

    @property
    def object_pos(self) -> np.ndarray:
        """A view ``[2]`` of the object's x, y."""
        return self.data.qpos[self._object_q]

    @property
    def object_yaw(self) -> float:
        return float(self.data.qpos[self._yaw_q])

    def goal_distances(self) -> list[float]:
        """Object centre to each goal centre (left, right), in m."""
        ox, oy = self.data.qpos[self._object_q].tolist()
        return [math.hypot(gx - ox, gy - oy) for gx, gy in self._goal_list]

    # -- hooks ---------------------------------------------------------------------------

    def _reset_task(self) -> None:
        rng = self.np_random
        qpos = self.data.qpos
        qpos[self._object_q] = rng.uniform(-0.04, 0.04, size=2)
        qpos[self._yaw_q] = rng.uniform(-np.pi, np.pi)
        # The pusher starts below the box, equally far from both ways around it, so neither
        # goal is favoured by the start state.
        qpos[self._pusher_q] = (rng.uniform(-0.04, 0.04), rng.uniform(-0.22, -0.18))

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * MAX_SPEED

    def _state(self) -> np.ndarray:
        qpos, qvel = self.data.qpos, self.data.qvel
        yaw = float(qpos[self._yaw_q])
        state = np.empty(self.state_dim, dtype=np.float32)
        state[0:2] = qpos[self._pusher_q]
        state[2:4] = qvel[self._pusher_v]
        state[4:6] = qpos[self._object_q]
        state[6] = math.sin(yaw)
        state[7] = math.cos(yaw)
        state[8:10] = qvel[self._object_v]
        return state

    def _success(self) -> bool:
        return min(self.goal_distances()) < GOAL_RADIUS

    def _dense_reward(self, success: bool) -> float:
        if success:
            return 1.0  # the maximum: no shaped state is worth more than finishing
        px, py = self.data.qpos[self._pusher_q].tolist()
        ox, oy = self.data.qpos[self._object_q].tolist()
        gap = max(math.hypot(px - ox, py - oy) - CONTACT_DIST, 0.0)
        # 0.2: stay in contact with the box (a pusher far away cannot make progress)
        reach = 0.2 * (1.0 - math.tanh(10.0 * gap))
        # 0.6: the box close to the nearest goal; nearest, so both modes are rewarded alike
        place = 0.6 * (1.0 - math.tanh(5.0 * min(self.goal_distances())))
        return reach + place


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _unit(vec: np.ndarray) -> np.ndarray:
    return vec / max(float(np.linalg.norm(vec)), 1e-9)


class PushExpert(ScriptedExpert):
    """Picks a goal at random at reset, circles the pusher around the box to its far side
    (never crossing it), then pushes along the box-to-goal line with lateral correction,
    slowing near the goal.

    Suboptimal episodes (probability ``quality.suboptimal_prob``) run one of:
    ``"misaim"`` push towards a point 7-10 cm beside the goal (the box stops beside the zone),
    ``"switch"`` dither between the goals mid-push, each switch costing a second approach,
    ``"wander"`` drift between random waypoints (and maybe into the box) before starting,
    ``"hesitate"`` freeze for long random stretches.
    Each fails more often than not within the 50-step limit, plainly for a reason a policy
    could learn to avoid.
    """

    SUBOPTIMAL_MODES = ("misaim", "switch", "wander", "hesitate")
    ORBIT_RADIUS = 0.11  # clear of the box's corners (0.057 + pusher 0.02) while circling
    STANDOFF = 0.07  # where the push starts, just behind the box face
    PUSH_SPEED = 0.25  # m/s; faster pushes let the box spin away
    ALIGNED = 0.35  # rad: close enough to the box's far side to start pushing
    MISALIGNED = 0.9  # rad: hysteresis, return to circling past this

    goal_index: int = 0
    """the goal of this episode: 0 left, 1 right (may change in the "switch" mode)"""
    mode: str | None = None
    """this episode's suboptimal mode, or None"""

    def reset(self) -> None:
        self.goal_index = int(self.rng.integers(2))
        self._pushing = False
        self._t = 0
        self.mode = None
        if self.rng.random() < self.quality.suboptimal_prob:
            self.mode = str(self.rng.choice(self.SUBOPTIMAL_MODES))
        self._misaim = self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.07, 0.1)
        self._switch_every = int(self.rng.integers(3, 7))  # push steps between goal switches
        self._push_steps = 0
        self._wander_steps = int(self.rng.integers(25, 45))
        self._waypoint = self.rng.uniform(-0.3, 0.3, size=2)
        self._frozen = 0

    def act(self, obs: Observation) -> np.ndarray:
        """Normalised pusher velocity ``float32 [2]``; ``obs`` is unused (privileged state)."""
        env: PushEnv = self.env.unwrapped
        self._t += 1
        if self.mode == "wander" and self._t <= self._wander_steps:
            if np.linalg.norm(self._waypoint - env.pusher_pos) < 0.03:
                self._waypoint = self.rng.uniform(-0.3, 0.3, size=2)
            return self.noisy(self._velocity_to(env.pusher_pos, self._waypoint, 0.6))
        if self.mode == "hesitate" and self._hesitating():
            return self.noisy(np.zeros(2))
        return self.noisy(self._push_policy(env))

    def _hesitating(self) -> bool:
        if self._frozen > 0:
            self._frozen -= 1
            return True
        if self.rng.random() < 0.2:
            self._frozen = int(self.rng.integers(5, 12))
            return True
        return False

    def _push_policy(self, env: PushEnv) -> np.ndarray:
        pusher, obj = env.pusher_pos.copy(), env.object_pos.copy()
        goal = env.goals[self.goal_index].copy()
        if self.mode == "misaim":
            goal[1] += self._misaim
        to_goal = goal - obj
        u = _unit(to_goal)
        rel = pusher - obj
        err = _wrap(np.arctan2(rel[1], rel[0]) - np.arctan2(-u[1], -u[0]))
        limit = self.MISALIGNED if self._pushing else self.ALIGNED
        self._pushing = abs(err) < limit
        if not self._pushing:
            # Orbit towards the far side the short way round, at a radius clear of the box.
            angle = np.arctan2(rel[1], rel[0]) - np.sign(err) * min(abs(err), 0.8)
            target = obj + self.ORBIT_RADIUS * np.array([np.cos(angle), np.sin(angle)])
            return self._velocity_to(pusher, target, 0.9)
        self._push_steps += 1
        if self.mode == "switch" and self._push_steps % self._switch_every == 0:
            self.goal_index = 1 - self.goal_index
        normal = np.array([-u[1], u[0]])
        lateral = float(rel @ normal)
        along = float(rel @ u)
        speed = float(np.clip(2.5 * np.linalg.norm(to_goal), 0.06, self.PUSH_SPEED))
        if along < -self.STANDOFF - 0.01:
            speed = self.PUSH_SPEED * 1.6  # still closing in on the box: approach quickly
        velocity = speed * u - 4.0 * lateral * normal
        return velocity / MAX_SPEED

    @staticmethod
    def _velocity_to(pusher: np.ndarray, target: np.ndarray, max_action: float) -> np.ndarray:
        action = 8.0 * (target - pusher) / MAX_SPEED
        norm = float(np.linalg.norm(action))
        return action * (max_action / norm) if norm > max_action else action
