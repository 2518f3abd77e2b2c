"""robot_rl's simulated tasks: our own MuJoCo tasks, and adapters for robosuite and
gymnasium's MuJoCo environments. Importing this package registers every ``robot_rl/...``
gymnasium id; it is cheap: entry points are strings, so MuJoCo, and robosuite above all, are
imported only when an environment is built.
"""

import os

# Must precede any mujoco import: software EGL is the offscreen backend that works headless.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.registry import TASK_IDS, register_all  # noqa: E402

register_all()

__all__ = ["TASK_IDS", "register_all"]
