"""Benchmarks: ``python -m robot_rl.bench SUITE --out FILE.json``.

Claims of learning and speed live here, not in unit tests. Each suite writes top-level numbers
named by its issue, plus ``cores`` and the settings it ran with.
"""

SUITES = {
    "foundation": "robot_rl.bench.foundation",
    "dsrl": "robot_rl.bench.dsrl",
    "dsrl_probe": "robot_rl.bench.dsrl_probe",
    "steerability": "robot_rl.bench.steerability",
    # the deployment daemon lives in real/, which the core does not import: named by path
    "daemon": "real.bench",
    "convert": "robot_rl.bench.convert",
    "chunked_offline": "robot_rl.bench.chunked_offline",
    # world models live in world_models/, which the core does not import either
    "world_model": "world_models.bench",
    "rewards": "robot_rl.bench.rewards",
    "scale": "robot_rl.bench.scale",
}
