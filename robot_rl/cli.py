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
}


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
        result = _runner(args.job)(args.overrides)
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
    return 0
