"""World-model suite (``python -m robot_rl.bench world_model --out FILE.json``).

One store of the task (the base's demonstrations plus base-policy rollouts) -> the state world
model -> DSRL trained only inside the model (no simulator step after collection) -> evaluation
in the simulator; over seeds. Top level: medians over seeds; per-seed values under ``seeds``;
the image world model's figures under ``image_model``.

``real_env_steps_used`` is measured, not assumed: DSRL's own count of training env steps minus
the model steps that the imagination environments counted. Evaluation episodes run in the
simulator by design and are reported apart: ``real_eval_env_steps`` (the base's and the final
evaluations) and ``loop_eval_episodes`` (the one evaluation DSRL's loop makes at its end,
``eval_every`` being the whole budget); no evaluation result feeds back into training.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.bench.common import pretrain_base
from robot_rl.eval.rollout import evaluate
from robot_rl.eval.stats import mean_interval
from robot_rl.improvers.dsrl import DSRL
from robot_rl.improvers.online import train_dsrl
from robot_rl.jobs.improve import check_base_matches_task, dsrl_config
from robot_rl.policies import load_policy
from world_models.__main__ import load_settings
from world_models.fidelity import fidelity_report
from world_models.imagination import StartStates, evaluate_in_model
from world_models.rollouts import collect_policy_episodes
from world_models.state_model import StateModelConfig
from world_models.train import train_state_model

EVAL_SEED = 20_000


@dataclass
class WorldModelBench:
    """Settings of the world-model benchmark (``key=value`` on the command line)."""

    task: str = "push"
    """task config name"""
    base: str | None = None
    """checkpoint of the base policy; None pretrains one with the demo's settings"""
    demos: str | None = None
    """store of demonstrations; None: ``demos.zarr`` beside the base checkpoint"""
    rollout_episodes: int = 300
    """base-policy rollouts appended to the demonstrations"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of DSRL inside the model"""
    env_steps: int = 20_000
    """imagined env steps of DSRL per seed"""
    eval_episodes: int = 100
    """real episodes of the base and final evaluations"""
    imagined_episodes: int = 200
    """imagined episodes for imagined_success (from the store's initial states)"""
    imagined_horizon: int = 0
    """model steps of those episodes; 0: the longest stored episode (the task's limit)"""
    world_model: list[str] = field(default_factory=list)
    """overrides of configs/world_model/state.yaml, e.g. ['steps=1000']"""
    env: list[str] = field(default_factory=list)
    """overrides of configs/env/imagination.yaml, e.g. ['penalty=0']"""
    improver: list[str] = field(default_factory=list)
    """overrides of configs/improver/dsrl.yaml"""
    parts: list[str] = field(default_factory=lambda: ["state", "image"])
    """'state' (the bars above) and/or 'image' (the image world model)"""
    image: list[str] = field(default_factory=list)
    """overrides of configs/world_model/image.yaml"""
    merge: str | None = None
    """a previous result JSON whose figures are kept where this run does not produce them"""
    out: str = "reports/bench-world-model"
    """folder for the store, models, curves and plots"""


def run(overrides: list[str]) -> dict:
    opts: WorldModelBench = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(WorldModelBench), OmegaConf.from_dotlist(overrides))
    )
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = json.loads(Path(opts.merge).read_text()) if opts.merge else {}
    figures["settings"] = {
        **figures.get("settings", {}),
        **OmegaConf.to_container(OmegaConf.structured(opts)),
    }
    if "state" in opts.parts:
        figures.update(_state_part(opts, out))
    if "image" in opts.parts:
        from world_models.image_report import image_bench

        figures["image_model"] = image_bench(opts.task, opts.image, out / "image_model", opts.base)
    return figures


def _state_part(opts: WorldModelBench, out: Path) -> dict:
    task = config.load_job("improve", config.ImproveJob, [f"task={opts.task}"]).task.build()
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_wm_") as tmp:
        base_path = opts.base or pretrain_base(opts.task, Path(tmp))
        base = load_policy(base_path)
        obs_dim = check_base_matches_task(base, task)
        store, collection = _make_store(opts, task, base, base_path, out)
        model_dir, model, train, fidelity = _train_model(opts, store, out)
        horizon = opts.imagined_horizon or int(collection["longest_episode"])
        starts = StartStates.from_store(store, base.n_obs_steps)
        print(f"[bench world_model] base: real and imagined success, horizon {horizon}", flush=True)
        base_eval = evaluate(base, task, opts.eval_episodes, 16, EVAL_SEED, progress=False)
        job = _improve_job(opts)
        belief = _belief(job.env)
        base_imagined = evaluate_in_model(
            base, model, starts, opts.imagined_episodes, horizon, seed=EVAL_SEED, **belief
        )
        runs = [
            _seed_run(
                opts,
                job,
                seed,
                task,
                base,
                obs_dim,
                model,
                model_dir,
                starts,
                horizon,
                base_eval.success_rate,
                out,
            )
            for seed in opts.seeds
        ]
    eval_steps = base_eval.env_steps + sum(r["real_eval_env_steps"] for r in runs)
    median = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if _numeric(runs, k)}
    real = [r["real_success"] for r in runs]
    return {
        "task": task.name,
        "base_checkpoint": str(base_path),
        "store": str(store),
        "collection": collection,
        "base_success": base_eval.success_rate,
        "base_success_ci95": list(base_eval.success_ci95),
        "base_imagined_success": base_imagined["success_rate"],
        "imagined_success": median["imagined_success"],
        "real_success": median["real_success"],
        "real_success_mean_ci95": list(mean_interval(real)[1:]) if len(real) > 1 else None,
        "real_gain": median["real_success"] - base_eval.success_rate,
        "imagined_real_gap": median["imagined_real_gap"],
        "real_env_steps_used": int(sum(r["real_env_steps_used"] for r in runs)),
        "real_eval_env_steps": int(eval_steps),
        "model_train_wall_s": train["train_wall_s"],
        "kstep_error": {k: fidelity["kstep"][str(k)]["rmse"] for k in (1, 5, 20)},
        "kstep_error_nothing_moves": {
            k: fidelity["kstep"][str(k)]["copy_rmse"] for k in (1, 5, 20)
        },
        "success_head": fidelity["success_head"],
        "episode_success_replay": fidelity["episode_success"],
        "dsrl_wall_s": median["wall_s"],
        "imagined_horizon": horizon,
        "seeds": runs,
        "model": str(model_dir),
        "plots": fidelity["plots"],
    }


def _numeric(runs: list[dict], key: str) -> bool:
    return all(isinstance(r[key], int | float) and not isinstance(r[key], bool) for r in runs)


def _make_store(opts, task, base, base_path, out: Path) -> tuple[Path, dict]:
    demos = Path(opts.demos) if opts.demos else Path(base_path).parent / "demos.zarr"
    if not demos.is_dir():
        raise FileNotFoundError(
            f"no demonstration store at {demos}; pass demos=PATH (the store the base learnt from)"
        )
    store = out / "store.zarr"
    partial = out / "store.zarr.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(demos, partial)
    print(f"[bench world_model] {opts.rollout_episodes} base rollouts -> {store}", flush=True)
    rollouts = collect_policy_episodes(
        base, task, partial, opts.rollout_episodes, seed=50_000, progress=False
    )
    shutil.rmtree(store, ignore_errors=True)
    partial.rename(store)
    from robot_rl.data import EpisodeStore

    with EpisodeStore.open(store) as handle:
        n_demo = handle.n_episodes - rollouts["episodes"]
        demo_frames = int(handle.episode_ends[n_demo - 1]) if n_demo else 0
        longest = int(handle.episode_lengths.max())
    return store, {
        "demo_episodes": n_demo,
        "demo_env_steps": demo_frames,
        "rollout_episodes": rollouts["episodes"],
        "rollout_env_steps": rollouts["env_steps"],
        "rollout_success": rollouts["success_rate"],
        "longest_episode": longest,
    }


def _train_model(opts, store: Path, out: Path):
    _, settings = load_settings([f"task={opts.task}", "world_model=state", *opts.world_model])
    known = set(StateModelConfig.__dataclass_fields__)
    cfg = StateModelConfig(**{k: v for k, v in settings.items() if k in known})
    run_dir = out / "world_model"
    print(f"[bench world_model] training the state world model -> {run_dir}", flush=True)
    model, train = train_state_model(store, cfg, run_dir, progress=False)
    fidelity = fidelity_report(model, store, train["held_out_episodes"], run_dir / "fidelity")
    (run_dir / "fidelity.json").write_text(json.dumps(fidelity, indent=2))
    return run_dir / "model", model, train, fidelity


def _improve_job(opts: WorldModelBench):
    return config.load_job(
        "improve",
        config.ImproveJob,
        [f"task={opts.task}", "env=imagination"]
        + [f"env.{o}" for o in opts.env]
        + [f"improver.{o}" for o in opts.improver],
    )


def _belief(env: dict) -> dict:
    """The imagination settings that shape what the model believes (used to evaluate in it)."""
    keys = ("member", "success_rule", "noise_scale")
    return {k: env[k] for k in keys if k in env}


def _seed_run(
    opts, job, seed, task, base, obs_dim, model, model_dir, starts, horizon, base_success, out
) -> dict:
    cfg = replace(
        dsrl_config(job.improver), seed=seed, env_steps=opts.env_steps, eval_every=opts.env_steps
    )
    learner = DSRL(base, obs_dim, cfg)
    factory = instantiate(
        job.env,
        task=task,
        policy=learner.policy,
        world_model={"path": str(model_dir)},
        gamma=cfg.gamma,
        seed=seed,
    )
    print(f"[bench world_model] DSRL inside the model, seed {seed}", flush=True)
    start = time.perf_counter()
    history = train_dsrl(
        learner,
        task,
        out=out / f"dsrl_seed{seed}",
        resume=False,
        progress=False,
        base_success=base_success,
        train_env=factory,
    )
    wall = time.perf_counter() - start
    imagined_steps = sum(env.env_steps for env in factory.built)
    imagined = evaluate_in_model(
        learner.policy,
        model,
        starts,
        opts.imagined_episodes,
        horizon,
        seed=EVAL_SEED,
        **_belief(job.env),
    )
    real = evaluate(learner.policy, task, opts.eval_episodes, 16, EVAL_SEED, progress=False)
    return {
        "seed": seed,
        "imagined_success": imagined["success_rate"],
        "real_success": real.success_rate,
        "real_success_ci95": list(real.success_ci95),
        "imagined_real_gap": abs(imagined["success_rate"] - real.success_rate),
        "real_env_steps_used": int(history.env_steps[-1] - imagined_steps),
        "imagined_env_steps": int(imagined_steps),
        "imagined_episodes_diverged": int(sum(env.diverged for env in factory.built)),
        "imagined_episodes": int(sum(env.episodes for env in factory.built)),
        "real_eval_env_steps": int(real.env_steps),
        "loop_eval_episodes": cfg.eval_episodes,  # DSRL's own evaluation at the end of its loop
        "loop_eval_success": history.success[-1],
        "wall_s": wall,
        "updates_per_s": history.updates / max(history.update_wall_s, 1e-9),
    }
