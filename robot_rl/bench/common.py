"""What several suites share: the base policy they pretrain when given none, and merging the
figures of parts not run now from an earlier JSON of the suite (a long learning part run
overnight, a timing part on a quiet machine)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from robot_rl import config

MACHINE_KEYS = ("cores", "machine", "python", "bench_wall_s")


def bench_options(schema: type, overrides: list[str], parts: tuple[str, ...] | None = None):
    """A suite's settings dataclass from ``key=value`` overrides; with ``parts``, its
    ``parts`` list is checked against them."""
    opts = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(overrides))
    )
    if parts is not None:
        unknown = sorted(set(opts.parts) - set(parts))
        if unknown:
            raise ValueError(f"unknown parts {unknown}; parts: {list(parts)}")
    return opts


def merge_previous(figures: dict, path: str | Path) -> None:
    """Copies into ``figures`` every top-level key of ``path`` it lacks (not the machine's
    facts) and lists them under ``parts_from_previous``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"previous={path}: no such JSON of an earlier run of this suite")
    previous = json.loads(path.read_text())
    taken = []
    for key, value in previous.items():
        if key not in figures and key not in MACHINE_KEYS:
            figures[key] = value
            taken.append(key)
    figures["parts_from_previous"] = {"file": str(path), "keys": taken}


def pretrain_base(task: str, tmp: Path) -> str:
    """The demo's data and pretraining (not its DSRL stage) on ``task``; the policy folder."""
    from robot_rl.jobs.demo import demo

    job = config.load_job(
        "demo",
        config.DemoJob,
        [f"task={task}", f"out={tmp / 'demo'}", "eval.video_episodes=0", "~improver"],
    )
    demo(job)
    return str(tmp / "demo" / "policy")
