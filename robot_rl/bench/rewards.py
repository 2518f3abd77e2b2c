"""Rewards suite: a success classifier and a domain-adapted CLIP reward on the default task with
camera images, DSRL trained on the classifier's reward beside DSRL on the task's reward (same
base, budget and seeds), and the reward models' throughput and cost per env step.

Data: a scripted expert (action noise, suboptimal modes) records camera episodes without
ending them on success, so success frames are stored; the held-out episodes come from other
seeds. The classifier arm's learner never sees the task's reward or success: its environments
do not end on success, the classifier's verdict at each chunk end is its reward and ends the
episode. Evaluations use the task's own success for both arms.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from robot_rl import config
from robot_rl.bench.common import bench_options, merge_previous, pretrain_base
from robot_rl.core import keys
from robot_rl.core.envs import make_vector_env, step_info
from robot_rl.core.reward import VectorRewardWrapper
from robot_rl.core.task import TaskConfig
from robot_rl.eval.rollout import evaluate, make_policy_env
from robot_rl.eval.stats import mean_interval
from robot_rl.jobs.collect import collect
from robot_rl.rewards.classifier import ClassifierConfig, SuccessClassifier, train_classifier
from robot_rl.rewards.frames import load_labelled_frames
from robot_rl.rewards.metrics import auroc, precision_recall

PARTS = ("classifier", "clip", "throughput", "dsrl")


@dataclass
class RewardsBench:
    """Settings of the rewards benchmark (``key=value`` on the command line)."""

    task: str = "push"
    """task config name"""
    camera: str = "top"
    """camera the reward models read"""
    image_size: int = 84
    """pixels per side (the task's default)"""
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    """parts to run: classifier, clip, throughput, dsrl (dsrl and throughput use the classifier
    in ``out`` when the classifier part is not run, training it only if there is none)"""
    train_episodes: int = 200
    """labelled expert episodes for training (incl. the classifier's calibration episodes)"""
    test_episodes: int = 60
    """held-out labelled episodes (other seeds) for AUROC"""
    noise_std: float = 0.3
    """expert action noise of the labelled episodes"""
    suboptimal_prob: float = 0.5
    """share of suboptimal expert episodes (near misses are the hard negatives)"""
    classifier: list[str] = field(default_factory=lambda: ["steps=500", "batch_size=64"])
    """overrides of configs/reward/classifier.yaml (a shorter run than its default)"""
    clip: list[str] = field(default_factory=lambda: ["steps=300"])
    """overrides of configs/reward/clip_adapt.yaml"""
    base: str | None = None
    """base policy checkpoint for DSRL; None pretrains one with the demo's settings"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """DSRL seeds (each arm)"""
    env_steps: int = 30_000
    """DSRL env-step budget of each arm"""
    eval_every: int = 5_000
    """env steps between DSRL learning-curve evaluations"""
    eval_episodes: int = 100
    """episodes of the base and final evaluations"""
    out: str = "reports/bench-rewards"
    """folder for checkpoints, curves and plots"""
    previous: str | None = None
    """JSON of an earlier run of this suite: figures of parts not run now are taken from it
    (and listed under ``parts_from_previous``)"""


def run(overrides: list[str]) -> dict:
    opts: RewardsBench = bench_options(RewardsBench, overrides, PARTS)
    torch.set_num_threads(1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {"settings": OmegaConf.to_container(OmegaConf.structured(opts))}
    task = config.load_job("improve", config.ImproveJob, [f"task={opts.task}"]).task.build()
    image_key = f"image.{opts.camera}"
    train_store, test_store = _labelled_stores(opts, out)
    test = load_labelled_frames(test_store, image_key)
    figures["data"] = {
        "train_store": str(train_store),
        "test_store": str(test_store),
        "test_frames": len(test),
        "test_positive": int(test.labels.sum()),
    }
    classifier = None
    trained = (out / "classifier" / "reward_model.json").is_file()
    if "classifier" in opts.parts or ("dsrl" in opts.parts and not trained):
        classifier = _classifier_part(opts, train_store, test, out / "classifier", figures)
    elif {"dsrl", "throughput"} & set(opts.parts):
        classifier = SuccessClassifier.load(out / "classifier")  # used, not trained again
    clip_model = None
    if "clip" in opts.parts:
        clip_model = _clip_part(opts, train_store, test, out / "clip", figures)
    if "throughput" in opts.parts:
        figures.update(_throughput(task, opts, {"classifier": classifier, "clip": clip_model}))
    if "dsrl" in opts.parts:
        figures.update(_dsrl_part(task, opts, classifier, out))
    if opts.previous:
        merge_previous(figures, opts.previous)
    return figures


def _settings(name: str, fixed: dict, dotlist: list[str], schema):
    """configs/reward/<name>.yaml, then the bench's fixed fields, then the overrides."""
    from robot_rl.jobs.reward import reward_settings

    merged = OmegaConf.merge(OmegaConf.create(fixed), OmegaConf.from_dotlist(dotlist))
    return reward_settings(name, OmegaConf.to_container(merged), schema)


def _labelled_stores(opts: RewardsBench, out: Path) -> tuple[Path, Path]:
    """Expert camera episodes that do not end on success; test episodes use other seeds."""
    paths = []
    for name, episodes, seed in (
        ("train", opts.train_episodes, 1_000),
        ("test", opts.test_episodes, 900_000),
    ):
        path = out / f"labelled_{name}.zarr"
        paths.append(path)
        settings = {
            "task": opts.task,
            "camera": opts.camera,
            "image_size": opts.image_size,
            "episodes": episodes,
            "noise_std": opts.noise_std,
            "suboptimal_prob": opts.suboptimal_prob,
            "seed": seed,
        }
        marker = path.with_suffix(".json")
        if _has_episodes(path, episodes) and marker.is_file():
            if json.loads(marker.read_text()) == settings:
                continue  # the same seeds and settings give the same episodes: reuse them
        job = config.load_job(
            "collect",
            config.CollectJob,
            [
                f"task={opts.task}",
                f"store={path}",
                f"episodes={episodes}",
                f"noise_std={opts.noise_std}",
                f"suboptimal_prob={opts.suboptimal_prob}",
                f"cameras=[{opts.camera}]",
                f"task.env_kwargs.image_size={opts.image_size}",
                "task.env_kwargs.terminate_on_success=false",
                f"seed={seed}",
                "overwrite=true",
            ],
        )
        collect(job, progress=False)
        marker.write_text(json.dumps(settings))
    return paths[0], paths[1]


def _has_episodes(path: Path, episodes: int) -> bool:
    from robot_rl.data.store import EpisodeStore

    if not (path / "zarr.json").is_file():
        return False
    store = EpisodeStore.open(path)
    return store.n_episodes == episodes


def _classifier_part(opts, train_store, test, out: Path, figures: dict) -> SuccessClassifier:
    cfg = _settings(
        "classifier",
        {"image_key": f"image.{opts.camera}", "image_size": opts.image_size},
        opts.classifier,
        ClassifierConfig,
    )
    frames = load_labelled_frames(train_store, cfg.image_key, with_state=cfg.with_state)
    start = time.perf_counter()
    model = train_classifier(frames, cfg, progress=False)
    train_s = time.perf_counter() - start
    model.save(out)
    p = model.probability({cfg.image_key: test.images})
    figures["classifier_auroc"] = auroc(p, test.labels)
    figures["classifier"] = {
        "checkpoint": str(out),
        "train_wall_s": train_s,
        "held_out_at_threshold": precision_recall(p, test.labels, model.threshold),
        "calibration": model.report,
    }
    return model


def _clip_part(opts, train_store, test, out: Path, figures: dict):
    from robot_rl.rewards.adapt import AdaptConfig, adapt_clip

    cfg = _settings("clip_adapt", {"image_key": f"image.{opts.camera}"}, opts.clip, AdaptConfig)
    start = time.perf_counter()
    reward, report = adapt_clip(train_store, cfg, out, progress=False)
    train_s = time.perf_counter() - start
    r = reward({cfg.image_key: test.images})
    figures["clip_auroc"] = auroc(r, test.labels)
    figures["clip"] = {"checkpoint": str(out), "train_wall_s": train_s, **report}
    return reward


def _camera_task(task: TaskConfig, opts: RewardsBench, terminate: bool) -> TaskConfig:
    kwargs = {
        **task.env_kwargs,
        "cameras": (opts.camera,),
        "image_size": opts.image_size,
        "terminate_on_success": terminate,
    }
    return replace(task, env_kwargs=kwargs)


def _throughput(task: TaskConfig, opts: RewardsBench, models: dict) -> dict:
    """frames/s of each model at batch 256; the classifier's cost per env step beside the
    camera environment's own, measured in alternating rounds (8 chunk envs, random chunks)."""
    from robot_rl.rewards.frames import load_labelled_frames as _load

    frames = _load(Path(opts.out) / "labelled_test.zarr", f"image.{opts.camera}").images[:256]
    frames_per_s = {}
    for name, model in models.items():
        if model is None:
            continue
        obs = {f"image.{opts.camera}": frames}
        model(obs)
        start = time.perf_counter()
        for _ in range(3):
            model(obs)
        frames_per_s[name] = 3 * len(frames) / (time.perf_counter() - start)
    result: dict = {"frames_per_s": frames_per_s}
    if models.get("classifier") is None:
        return result
    cam_task = _camera_task(task, opts, terminate=False)
    env_s, model_s, steps = 0.0, 0.0, 0
    state_s, state_steps = 0.0, 0
    for _ in range(3):
        a, b, n = _time_chunk_envs(cam_task, models["classifier"])
        env_s, model_s, steps = env_s + a, model_s + b, steps + n
        a, _, n = _time_chunk_envs(replace(task, env_kwargs={**task.env_kwargs}), None)
        state_s, state_steps = state_s + a, state_steps + n
    result.update(
        reward_cost_ratio=(model_s / steps) / (env_s / steps),
        reward_ms_per_env_step=1e3 * model_s / steps,
        camera_env_ms_per_step=1e3 * env_s / steps,
        state_env_ms_per_step=1e3 * state_s / state_steps,
        reward_cost_ratio_vs_state_env=(model_s / steps) / (state_s / state_steps),
    )
    return result


class _RandomChunks:
    n_obs_steps, n_action_steps = 2, 8


def _time_chunk_envs(task: TaskConfig, model, n_envs: int = 8, vector_steps: int = 60):
    """(env seconds, model seconds, env steps) of random chunks on n chunk envs."""
    env = make_vector_env([lambda: make_policy_env(task, _RandomChunks(), gamma=0.99)] * n_envs)
    if model is not None:
        env = VectorRewardWrapper(env, model)
    rng = np.random.default_rng(0)
    try:
        env.reset(seed=0)
        steps, start = 0, time.perf_counter()
        for _ in range(vector_steps):
            chunk = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
            _, _, _, _, info = env.step(chunk)
            steps += int(np.sum(step_info(info, keys.CHUNK_STEPS)))
        total = time.perf_counter() - start
    finally:
        env.close()
    model_s = env.model_s if model is not None else 0.0
    return total - model_s, model_s, steps


def _dsrl_part(task: TaskConfig, opts: RewardsBench, classifier, out: Path) -> dict:
    from robot_rl.improvers.dsrl import DSRL
    from robot_rl.improvers.online import train_dsrl
    from robot_rl.jobs.improve import check_base_matches_task, dsrl_config
    from robot_rl.policies import load_policy

    improver = config.load_job("improve", config.ImproveJob, []).improver
    # the classifier's verdict (1 at p >= its calibrated threshold) rewards and ends episodes
    sparse = SuccessClassifier.load(out / "classifier", reward="sparse")
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_rewards_") as tmp:
        base_path = opts.base or pretrain_base(opts.task, Path(tmp))
        base = load_policy(base_path)
        obs_dim = check_base_matches_task(base, task)
        base_eval = evaluate(base, task, opts.eval_episodes, 16, 20_000, progress=False)
        cam_task = _camera_task(task, opts, terminate=False)

        def classifier_env(n: int):
            envs = make_vector_env([lambda: make_policy_env(cam_task, base, gamma=0.99)] * n)
            return VectorRewardWrapper(envs, sparse, terminate_above=0.5)

        runs: dict[str, list] = {"task_reward": [], "classifier_reward": []}
        for seed in opts.seeds:
            for arm in runs:
                print(f"[bench rewards] dsrl {arm} seed {seed}", flush=True)
                cfg = replace(
                    dsrl_config(improver),
                    seed=seed,
                    env_steps=opts.env_steps,
                    eval_every=opts.eval_every,
                )
                learner = DSRL(base, obs_dim, cfg)
                start = time.perf_counter()
                history = train_dsrl(
                    learner,
                    task,
                    out=out / f"dsrl_{arm}_seed{seed}",
                    resume=False,
                    progress=False,
                    base_success=base_eval.success_rate,
                    train_env=classifier_env if arm == "classifier_reward" else None,
                )
                final = evaluate(
                    learner.policy, task, opts.eval_episodes, 16, 20_000, progress=False
                )
                runs[arm].append(
                    {
                        "seed": seed,
                        "final_success": final.success_rate,
                        "final_success_ci95": list(final.success_ci95),
                        "gain": final.success_rate - base_eval.success_rate,
                        "wall_s": time.perf_counter() - start,
                        "curve": {"env_steps": history.env_steps, "success": history.success},
                    }
                )
    task_gain = [r["gain"] for r in runs["task_reward"]]
    cls_gain = [r["gain"] for r in runs["classifier_reward"]]
    med_task, med_cls = float(np.median(task_gain)), float(np.median(cls_gain))
    return {
        "base_checkpoint": str(base_path),
        "base_success": base_eval.success_rate,
        "base_success_ci95": list(base_eval.success_ci95),
        "dsrl_env_steps": opts.env_steps,
        "task_reward_gain": med_task,
        "task_reward_gain_mean_ci95": list(mean_interval(task_gain)),
        "classifier_reward_gain": med_cls,
        "classifier_reward_gain_mean_ci95": list(mean_interval(cls_gain)),
        "gain_ratio": med_cls / med_task if med_task > 0 else None,
        "seeds": {
            str(s): {
                "task_reward": t,
                "classifier_reward": c,
                "gain_ratio": c["gain"] / t["gain"] if t["gain"] > 0 else None,
            }
            for s, t, c in zip(
                opts.seeds, runs["task_reward"], runs["classifier_reward"], strict=True
            )
        },
    }
