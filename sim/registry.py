"""The ``robot_rl/...`` gymnasium ids and their entry points, registered by ``import sim``."""

from __future__ import annotations

import gymnasium as gym

TASKS: dict[str, tuple[str, int, dict]] = {
    # id: (entry point, max_episode_steps, default kwargs)
    "robot_rl/Push-v0": ("sim.tasks.push:PushEnv", 50, {}),
    "robot_rl/Lift-v0": ("sim.tasks.lift:LiftEnv", 50, {}),
    "robot_rl/RobosuiteLift-v0": ("sim.adapters.robosuite_lift:RobosuiteLiftEnv", 100, {}),
    "robot_rl/GymReacher-v0": (
        "sim.adapters.gymnasium_mujoco:GymMujocoEnv",
        50,
        {"inner_id": "Reacher-v5"},
    ),
    "robot_rl/GymPusher-v0": (
        "sim.adapters.gymnasium_mujoco:GymMujocoEnv",
        100,
        {"inner_id": "Pusher-v5"},
    ),
}
TASK_IDS: tuple[str, ...] = tuple(TASKS)


def register_all() -> None:
    """Register every task id with gymnasium; safe to call more than once."""
    for env_id, (entry_point, max_steps, kwargs) in TASKS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry_point,
            max_episode_steps=max_steps,
            kwargs=dict(kwargs),
        )
