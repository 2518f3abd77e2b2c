"""``robot-rl serve robot=... policy=...``: the deployment daemon.

The daemon lives in ``real/`` (drivers, safety layer, control loop), which the core never
imports: the job config names its entry point by dotted path (``runner``), as a task config
names the module that registers it.
"""

from __future__ import annotations

import importlib

from robot_rl.config import ServeJob


def serve_overrides(overrides: list[str]) -> list[str]:
    """``policy=PATH`` means the checkpoint to serve; ``policy`` is also the name of the
    pretraining config group, which Hydra would look the path up in."""
    return [
        "policy_path=" + o.removeprefix("policy=") if o.startswith("policy=") else o
        for o in overrides
    ]


def serve_job(job: ServeJob) -> dict:
    module, _, name = job.runner.rpartition(".")
    try:
        runner = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"serve.runner {job.runner!r} cannot be imported ({err}); the daemon ships in the "
            "project's real/ package: run from a full checkout (`make venv`)"
        ) from err
    return runner(job)
