"""DSRL critic probe: does a trained DSRL run's noise critic rank latent noises as the task
does? Branches the simulator at every noise choice of the steered policy's episodes, failed
and won (:mod:`robot_rl.improvers.probe`). ``run=`` is a DSRL run folder (``robot-rl improve`` or
the DSRL bench's ``out/sac_seed0``) holding ``checkpoint/``; ``improver=[...]`` repeats the
settings it was trained with (network sizes, ``n_action_steps``, ``noise_bound``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.improvers.dsrl import DSRL
from robot_rl.improvers.probe import probe_noise_critic
from robot_rl.jobs.improve import check_base_matches_task, dsrl_config
from robot_rl.policies import load_policy
from robot_rl.rl.state import load_learner, load_training_state


@dataclass
class ProbeBench:
    """Settings of the probe (``key=value`` on the command line)."""

    run: str = "runs/dsrl"
    """DSRL run folder with ``checkpoint/``"""
    base: str = "runs/base_push/policy"
    """the base policy it steered"""
    task: str = "push"
    """task config name"""
    improver: list[str] = field(default_factory=list)
    """the run's overrides of configs/improver/dsrl.yaml, e.g. ['n_action_steps=4']"""
    episodes: int = 40
    """episodes of the steered policy, every noise choice probed"""
    candidates: int = 16
    """noises tried at every choice (the actor's own included)"""
    samples: list[str] = field(default_factory=lambda: ["gaussian", "actor", "local"])
    """how the other candidates are drawn: 'gaussian' (as the base), 'actor' (around the
    actor's choice, as it explores), 'local' (the actor's choice plus small Gaussian steps, once
    per ``local_scales``: how smooth success is around the noises it picks)"""
    local_scales: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])
    """step sizes of the 'local' candidates, in units of the noise bound"""
    seed: int = 20_000
    """seed of the first episode"""


def run(overrides: list[str]) -> dict:
    opts: ProbeBench = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(ProbeBench), OmegaConf.from_dotlist(overrides))
    )
    checkpoint = Path(opts.run) / "checkpoint"
    if not checkpoint.is_dir():
        raise FileNotFoundError(
            f"{checkpoint} does not exist: run= must be a DSRL run folder (robot-rl improve's "
            "out=, or the DSRL bench's out/sac_seedN)"
        )
    job = config.load_job(
        "improve",
        config.ImproveJob,
        [f"task={opts.task}", *(f"improver.{o}" for o in opts.improver)],
    )
    task = job.task.build()
    base = load_policy(opts.base)
    learner = DSRL(base, check_base_matches_task(base, task), dsrl_config(job.improver))
    tensors, meta = load_training_state(checkpoint)
    load_learner(tensors, meta["optimizers"], learner.modules(), learner.optimizers())
    figures = {
        "run": opts.run,
        "base": opts.base,
        "task": task.name,
        "env_steps": meta["env_steps"],
    }
    for sample in opts.samples:
        for scale in opts.local_scales if sample == "local" else [None]:
            result = probe_noise_critic(
                learner,
                task,
                opts.episodes,
                opts.candidates,
                sample,
                opts.seed,
                progress=True,
                **({} if scale is None else {"local_scale": scale}),  # 0 or less is refused
            )
            name = sample if scale is None else f"local_{scale:g}"
            figures[name] = {group: r.summary() for group, r in result.items()}
    return figures
