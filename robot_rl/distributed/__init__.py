"""Beyond one machine: rollout workers and the learner as Ray actors (``runner=ray``), running
the same improver classes and training loop as a single process. Ray is an optional extra
(``pip install robot-rl[ray]``); nothing here imports it until a run starts."""

from robot_rl.distributed.ray_runner import (
    RayCollector,
    RayRun,
    RayRunnerConfig,
    RolloutWorker,
    train_dsrl_ray,
)

__all__ = ["RayCollector", "RayRun", "RayRunnerConfig", "RolloutWorker", "train_dsrl_ray"]
