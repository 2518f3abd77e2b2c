"""The shared skeleton of robot_rl's own MuJoCo tasks.

A task subclasses :class:`MujocoTaskEnv` and fills in five small hooks (``_reset_task``,
``_apply_action``, ``_state``, ``_success``, ``_dense_reward``); the base class owns the
model, the frame skip, the observation dict, reward types and lazy offscreen rendering.

Contracts (``robot_rl.core.keys``)::

    obs    = {"state": float32 [D], "image.<cam>": uint8 [S, S, 3] for cam in cameras}
    action = float32 [A] in [-1, 1]
    info   = {"is_success": bool}            at reset and at every step
"""

from __future__ import annotations

import atexit
import weakref
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from robot_rl.core import keys

REWARD_TYPES = ("dense", "sparse")
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def load_asset(name: str) -> mujoco.MjModel:
    """Load ``sim/assets/<name>`` (shipped as package data) and switch it to fast visuals."""
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(f"MJCF asset {name!r} not found at {path}")
    model = mujoco.MjModel.from_xml_path(str(path))
    use_fast_visuals(model)
    return model


def use_fast_visuals(model: mujoco.MjModel) -> None:
    """Shadows, reflections and multisampling are most of software rendering's cost
    (~40 fps -> ~1,000+ fps at 84x84, see ENVIRONMENT.md); policies do not need them."""
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0


def check_task_options(reward_type: str, render_mode: str | None, image_size: int) -> None:
    """The constructor options every robot_rl task shares; errors name the bad value."""
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")


class FastRenderer:
    """Lazily created ``mujoco.Renderer``s, one per image size, with shadows and reflections
    off. Nothing touches OpenGL until the first image is asked for."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model = model
        self.data = data
        self._renderers: dict[int, mujoco.Renderer] = {}
        # Freeing an EGL context after EGL has terminated at exit raises noisy errors; the
        # finalizer closes forgotten renderers on garbage collection or at exit, before that.
        self._finalizer = weakref.finalize(self, _close_renderers, self._renderers)

    def render(self, camera: str | int | mujoco.MjvCamera, size: int) -> np.ndarray:
        """One RGB frame ``uint8 [size, size, 3]`` from ``camera``."""
        renderer = self._renderers.get(size)
        if renderer is None:
            # The offscreen framebuffer must fit the image; assets default to small ones.
            offscreen = self.model.vis.global_
            offscreen.offwidth = max(offscreen.offwidth, size)
            offscreen.offheight = max(offscreen.offheight, size)
            renderer = mujoco.Renderer(self.model, height=size, width=size)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[size] = renderer
            # mujoco registers eglTerminate at exit when it makes its first context; hooks run
            # last-in first-out, so registering after it frees our contexts before it.
            if len(self._renderers) == 1:
                atexit.register(self._finalizer)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def close(self) -> None:
        self._finalizer()
        atexit.unregister(self._finalizer)


def _close_renderers(renderers: dict[int, mujoco.Renderer]) -> None:
    for renderer in renderers.values():
        renderer.close()
    renderers.clear()


class MujocoTaskEnv(gym.Env):
    """Base class: a MuJoCo model stepped ``frame_skip`` times per control step.

    Subclasses set the class attributes ``asset``, ``frame_skip``, ``state_dim``,
    ``action_dim`` and ``render_camera``, and implement the hooks below. Observations are
    ``{"state": float32 [state_dim], "image.<cam>": uint8 [image_size, image_size, 3]}``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    asset: str
    frame_skip: int
    state_dim: int
    action_dim: int
    render_camera: str
    render_size: int = 128

    def __init__(
        self,
        reward_type: str = "dense",
        cameras: tuple[str, ...] = (),
        image_size: int = 84,
        render_mode: str | None = None,
        terminate_on_success: bool = True,
    ):
        check_task_options(reward_type, render_mode, image_size)
        self.model = load_asset(self.asset)
        self.data = mujoco.MjData(self.model)
        known = [self.model.camera(i).name for i in range(self.model.ncam)]
        cameras = tuple(cameras)
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise ValueError(f"unknown cameras {unknown} for {type(self).__name__}; known: {known}")
        self.reward_type = reward_type
        self.cameras = cameras
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self._renderer = FastRenderer(self.model, self.data)
        self._image_keys = tuple(keys.image_key(c) for c in cameras)

        obs_spaces: dict[str, spaces.Space] = {
            keys.STATE: spaces.Box(-np.inf, np.inf, shape=(self.state_dim,), dtype=np.float32)
        }
        for key in self._image_keys:
            obs_spaces[key] = spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8
            )
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)

    # -- hooks ---------------------------------------------------------------------------

    def _reset_task(self) -> None:
        """Place the robot and objects with ``self.np_random`` (``data`` is freshly reset)."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        """Map a normalised action ``[A]`` to ``data.ctrl``."""
        raise NotImplementedError

    def _state(self) -> np.ndarray:
        """The low-dimensional observation, float32 ``[state_dim]`` (a fresh array)."""
        raise NotImplementedError

    def _success(self) -> bool:
        """The task's success predicate on the current state."""
        raise NotImplementedError

    def _dense_reward(self, success: bool) -> float:
        """The shaped reward of the current state, in [0, 1], 1.0 exactly on success."""
        raise NotImplementedError

    # -- gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_task()
        if options and "start_perturbation" in options:
            self._perturb_start(**options["start_perturbation"])
        mujoco.mj_forward(self.model, self.data)
        return self._observation(), {keys.IS_SUCCESS: self._success()}

    def _perturb_start(self, slide: float = 0.0, hinge: float = 0.0, seed: int = 0) -> None:
        """``reset(options={"start_perturbation": {"slide": m, "hinge": rad, "seed": n}})``:
        after the task has placed everything, move every slide joint (and a free joint's x, y)
        by uniform(-slide, slide) metres and every hinge by uniform(-hinge, hinge) radians,
        drawn from ``seed``'s own generator, so the task's draws are untouched. For measuring
        how sensitive an outcome is to the start state (``robot_rl.eval.steerability``)."""
        if slide < 0 or hinge < 0:
            raise ValueError(f"start_perturbation scales must be >= 0, got {slide=}, {hinge=}")
        rng = np.random.default_rng(seed)
        for j in range(self.model.njnt):
            adr, kind = int(self.model.jnt_qposadr[j]), int(self.model.jnt_type[j])
            if kind == mujoco.mjtJoint.mjJNT_SLIDE:
                self.data.qpos[adr] += rng.uniform(-slide, slide)
            elif kind == mujoco.mjtJoint.mjJNT_HINGE:
                self.data.qpos[adr] += rng.uniform(-hinge, hinge)
            elif kind == mujoco.mjtJoint.mjJNT_FREE:
                self.data.qpos[adr : adr + 2] += rng.uniform(-slide, slide, size=2)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        # Clipped here too: benchmarks and learners may call the raw env without ActionCheck.
        self._apply_action(np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0))
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        success = self._success()
        if self.reward_type == "sparse":
            reward = 1.0 if success else 0.0
        else:
            reward = self._dense_reward(success)
        terminated = success and self.terminate_on_success
        return self._observation(), reward, terminated, False, {keys.IS_SUCCESS: success}

    def render(self) -> np.ndarray | None:
        """``uint8 [render_size, render_size, 3]`` from ``render_camera`` in rgb_array mode."""
        if self.render_mode != "rgb_array":
            return None
        return self._renderer.render(self.render_camera, self.render_size)

    def close(self) -> None:
        self._renderer.close()

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {keys.STATE: self._state()}
        for camera, key in zip(self.cameras, self._image_keys, strict=True):
            obs[key] = self._renderer.render(camera, self.image_size)
        return obs

    # -- helpers for subclasses ----------------------------------------------------------

    def _joint_slice(self, *names: str, dof: bool) -> slice:
        """The qpos (or, with ``dof``, qvel) slice of 1-dof joints that are adjacent in the
        model, cached once so that steps do no name look-ups and index with views."""
        adrs = [
            int(self.model.joint(n).dofadr[0] if dof else self.model.joint(n).qposadr[0])
            for n in names
        ]
        if adrs != list(range(adrs[0], adrs[0] + len(adrs))):
            raise ValueError(f"joints {names} are not adjacent in the model: addresses {adrs}")
        return slice(adrs[0], adrs[0] + len(adrs))
