"""``robot-rl JOB [key=value ...]``: one entry point for every job.

Overrides use Hydra's syntax, e.g. ``robot-rl collect task=lift episodes=50 noise_std=0.2``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from robot_rl import config

JOBS: dict[str, str] = {
    "collect": "scripted-expert episodes into an episode store",
    "pretrain": "behaviour cloning from a store into a checkpoint folder",
    "eval": "success rate (95% Wilson interval), return, length, video, PNG",
    "improve": "improve a pretrained policy (improver=dsrl), with curves and checkpoints",
    "demo": "collect imperfect demos -> pretrain -> evaluate -> DSRL -> report folder",
    "serve": "deployment daemon on a robot: robot-rl serve robot=sim_push policy=PATH",
    "convert": "convert SRC DST: LeRobot, robomimic HDF5, diffusion_policy zarr <-> store",
    "dataset": "dataset check PATH: schema, NaN, boundaries, timestamps, actions; summary, PNG",
    "reward": "reward train|adapt|vlm|eval|relabel: success classifier, CLIP reward, AUROC",
}

POSITIONALS: dict[str, tuple[str, ...]] = {
    "convert": ("src", "dst"),
    "dataset": ("command", "path"),
    "reward": ("command",),
}
"""Leading arguments without '=' that a job takes by position, e.g. ``convert SRC DST``."""


def _runner(job: str) -> Callable[[list[str]], dict]:
    def run(overrides: list[str]) -> dict:
        if job == "collect":
            from robot_rl.jobs.collect import collect

            return collect(config.load_job("collect", config.CollectJob, overrides))
        if job == "pretrain":
            from robot_rl.jobs.pretrain import pretrain_job

            return pretrain_job(config.load_job("pretrain", config.PretrainJob, overrides))
        if job == "eval":
            from robot_rl.jobs.evaluate import eval_job

            return eval_job(config.load_job("eval", config.EvalJob, overrides))
        if job == "improve":
            from robot_rl.jobs.improve import improve_job

            return improve_job(config.load_job("improve", config.ImproveJob, overrides))
        if job in ("convert", "dataset"):
            from robot_rl.jobs.convert import convert_job, dataset_job

            if job == "convert":
                return convert_job(config.load_job(job, config.ConvertJob, overrides))
            return dataset_job(config.load_job(job, config.DatasetJob, overrides))
        if job == "reward":
            from robot_rl.jobs.reward import reward_job

            return reward_job(overrides)
        if job == "serve":
            from robot_rl.jobs.serve import serve_job, serve_overrides

            return serve_job(config.load_job("serve", config.ServeJob, serve_overrides(overrides)))
        from robot_rl.jobs.demo import demo

        return demo(config.load_job("demo", config.DemoJob, overrides))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robot-rl",
        description="Improve imitation-pretrained robot policies with reinforcement learning.",
        epilog="jobs:\n" + "\n".join(f"  {k:10s} {v}" for k, v in JOBS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", choices=sorted(JOBS), help="the job to run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. task=lift episodes=50")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        result = _runner(args.job)(positional_overrides(args.job, args.overrides))
    except (
        ValueError,
        KeyError,
        FileNotFoundError,
        ImportError,
        TypeError,
        HydraException,
        OmegaConfBaseException,
    ) as err:
        # the message names the bad value and the fix; a traceback would bury it
        print(f"robot-rl {args.job}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("ok", True) else 1  # a dataset check that found errors fails


def positional_overrides(job: str, args: list[str]) -> list[str]:
    """``convert a.hdf5 b.zarr fps=20`` -> ``["src='a.hdf5'", "dst='b.zarr'", "fps=20"]``."""
    names = iter(POSITIONALS.get(job, ()))
    overrides = []
    for arg in args:
        name = next(names, None) if "=" not in arg else None
        if name is None:
            overrides.append(arg)
        else:  # quoted, so that a path with ',' or ':' is not read as Hydra syntax
            quoted = arg.replace("\\", "\\\\").replace("'", "\\'")
            overrides.append(f"{name}='{quoted}'")
    return overrides
