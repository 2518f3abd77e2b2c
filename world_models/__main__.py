"""``python -m world_models COMMAND [key=value ...]``.

    train     train a world model on a store and write its fidelity report
              (task=push world_model=state store=PATH out=DIR steps=... kind=image)
    rollouts  append a policy's rollouts to a store (policy=PATH store=PATH episodes=300)

Settings come from ``configs/world_model/<kind>.yaml`` and ``configs/task/<task>.yaml``;
``key=value`` overrides a world-model setting, ``task=`` / ``world_model=`` pick the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from omegaconf import OmegaConf

from robot_rl.config import TaskNode, config_dir


def load_settings(overrides: list[str]) -> tuple[TaskNode, dict]:
    """(task, world-model settings) from the config files and ``key=value`` overrides."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"expected key=value overrides, got {bad}")
    pairs = dict(o.split("=", 1) for o in overrides)
    task_name = pairs.pop("task", "push")
    kind = pairs.pop("world_model", "state")
    root = config_dir()
    files = {"task": root / "task" / f"{task_name}.yaml", "world_model": root / "world_model"}
    files["world_model"] = files["world_model"] / f"{kind}.yaml"
    for what, file in files.items():
        if not file.is_file():
            known = sorted(p.stem for p in file.parent.glob("*.yaml"))
            raise ValueError(f"unknown {what} {file.stem!r}: no {file}; known: {known}")
    cfg = OmegaConf.create(
        {"task": OmegaConf.load(files["task"]), "world_model": OmegaConf.load(files["world_model"])}
    )
    rest = OmegaConf.from_dotlist([f"world_model.{k}={v}" for k, v in pairs.items()])
    cfg = OmegaConf.merge(cfg, rest)
    OmegaConf.resolve(cfg)
    task = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskNode), cfg.task))
    return task, OmegaConf.to_container(cfg.world_model)


def train_command(overrides: list[str]) -> dict:
    task, settings = load_settings(overrides)
    kind = settings.get("kind", "state")
    if kind == "image":
        from world_models.image_report import train_image_job

        return train_image_job(task.build(), settings)
    from world_models.fidelity import fidelity_report
    from world_models.state_model import StateModelConfig
    from world_models.train import train_state_model

    known = {f.name for f in fields(StateModelConfig)}
    unknown = sorted(set(settings) - known - {"kind", "out", "path", "store"})
    if unknown:
        raise ValueError(f"unknown state world model settings {unknown}; known: {sorted(known)}")
    cfg = StateModelConfig(**{k: v for k, v in settings.items() if k in known}, task=task.name)
    out = Path(settings["out"])
    model, summary = train_state_model(settings["store"], cfg, out)
    report = fidelity_report(
        model, settings["store"], summary["held_out_episodes"], out / "fidelity"
    )
    (out / "fidelity.json").write_text(json.dumps(report, indent=2))
    summary["held_out_episodes"] = len(summary["held_out_episodes"])
    return {**summary, "model": str(out / "model"), "fidelity": report}


def rollouts_command(overrides: list[str]) -> dict:
    from robot_rl.policies import load_policy
    from world_models.rollouts import collect_policy_episodes

    pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
    for key in ("policy", "store"):
        if key not in pairs:
            raise ValueError(f"rollouts needs {key}=PATH, e.g. policy=runs/push_diffusion")
    task, _ = load_settings([f"task={pairs.get('task', 'push')}"])
    return collect_policy_episodes(
        load_policy(pairs["policy"]),
        task.build(),
        pairs["store"],
        int(pairs.get("episodes", 300)),
        seed=int(pairs.get("seed", 50_000)),
    )


COMMANDS = {"train": train_command, "rollouts": rollouts_command}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m world_models", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        result = COMMANDS[args.command](args.overrides)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"python -m world_models {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
