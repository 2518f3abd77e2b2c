"""Chunked offline RL from end to end, in stages that each write what they made:

    1. data        stores -> ChunkData (checks first), K base samples per frame (cached file)
    2. critic      ChunkCritic updates with periodic best-of-N evaluations (the curve) and
                   resumable checkpoints
    3. extraction  best_of_n (critic + base), expo (edit policy, joint updates from a copy of
                   the critic), q_weighted (fine-tuned diffusion policy)
    4. online      optional: the best-of-N or EXPO policy keeps learning in an environment

The job (``robot_rl.jobs.offline``) and the benchmark both drive this class.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.core.reward import RewardModel
from robot_rl.core.task import TaskConfig
from robot_rl.eval.rollout import evaluate
from robot_rl.offline.config import ChunkedOfflineConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.data import ChunkData, build_chunk_data, sample_candidates
from robot_rl.offline.expo import ExpoLearner
from robot_rl.offline.policies import BestOfNPolicy, ExpoPolicy, check_inference_steps
from robot_rl.offline.qweighted import advantage_weights, q_weighted_finetune
from robot_rl.offline.replay import OfflineBatches
from robot_rl.rl.state import (
    learner_tensors,
    load_learner,
    load_training_state,
    save_training_state,
)

SAMPLES_FILE = "base_samples.safetensors"


class ChunkedOffline:
    """Holds the data, the cached base samples and the critic of one run."""

    def __init__(
        self,
        base: SteerableChunkPolicy,
        cfg: ChunkedOfflineConfig,
        out: Path | None = None,
        reward_model: RewardModel | None = None,
        progress: bool = True,
        data: ChunkData | None = None,
        candidates: torch.Tensor | None = None,
    ):
        self.base, self.cfg, self.out, self.progress = base, cfg, out, progress
        if cfg.best_of_n.inference_steps is not None:  # a base that cannot: fail before training
            check_inference_steps(base, cfg.best_of_n.inference_steps)
        if cfg.reward == "model" and reward_model is None:
            reward_model = instantiate_reward_model(cfg.reward_model)
        self.data = data or build_chunk_data(
            cfg.store,
            base,
            cfg.critic.gamma,
            cfg.reward,
            reward_model,
            bootstrap_timeouts=cfg.critic.bootstrap_timeouts,
        )
        self.candidates = candidates if candidates is not None else self._samples()
        self.batches = OfflineBatches(self.data, self.candidates)
        self.critic = self.new_critic()
        self.writer = _writer(out)
        self.curve: dict[str, list] = {"updates": [], "success": [], "ci95": []}

    # ---------------------------------------------------------------- stage 1: data
    def _samples(self) -> torch.Tensor:
        key = self._samples_key()
        file = self.out / SAMPLES_FILE if self.out else None
        if file is not None and file.is_file():
            cached = load_file(str(file))
            if "key" in cached and bytes(cached["key"].tolist()).decode() == key:
                return cached["candidates"]
        candidates = sample_candidates(
            self.base,
            self.data.frame_obs,
            self.cfg.critic.samples,
            self.cfg.seed,
            progress=self.progress,
        )
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(file.name + ".partial")
            key_tensor = torch.tensor(list(key.encode()), dtype=torch.uint8)
            save_file({"candidates": candidates, "key": key_tensor}, str(tmp))
            tmp.rename(file)
        return candidates

    def _samples_key(self) -> str:
        """What the cached samples depend on: the data, the base's weights, K and the seed."""
        h = hashlib.sha256()
        h.update(self.data.frame_obs.numpy().tobytes())
        for value in _base_fingerprint(self.base):
            h.update(value)
        h.update(f"{self.cfg.critic.samples}/{self.cfg.seed}".encode())
        return h.hexdigest()

    def new_critic(self) -> ChunkCritic:
        critic = ChunkCritic(
            self.data.obs_dim, self.data.chunk_dim, self.cfg.critic, seed=self.cfg.seed
        )
        critic.fit_obs_normalization(self.data.frame_obs)
        return critic

    # ---------------------------------------------------------------- stage 2: critic
    def train_critic(self, task: TaskConfig | None = None, resume: bool = True) -> dict:
        """``critic.updates`` updates; with ``task``, a best-of-N evaluation every
        ``eval_every`` updates (the learning curve). Returns timings."""
        cfg, critic = self.cfg, self.critic
        ckpt = self.out / "critic_checkpoint" if self.out else None
        if ckpt and resume and ckpt.exists():
            meta = _load(critic.modules(), critic.optimizers(), ckpt)
            critic.updates, self.curve = meta["updates"], meta["curve"]
        total = cfg.critic.updates
        bar = tqdm(
            total=total, initial=critic.updates, desc="chunk critic", disable=not self.progress
        )
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        while critic.updates < total:
            metrics = critic.update(self.batches.sample(cfg.critic.batch_size, critic.generator))
            bar.update(1)
            step = critic.updates
            if self.writer is not None and step % 50 == 0:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"critic/{k}", v, step)
            if step % 100 == 0:
                bar.set_postfix(td=f"{metrics['td_loss']:.4f}", q=f"{metrics['q_data']:.3f}")
            if task is not None and (step % cfg.eval_every == 0 or step == total):
                self._evaluate_curve(task, step)
            if ckpt and (step % cfg.checkpoint_every == 0 or step == total):
                _save(
                    critic.modules(),
                    critic.optimizers(),
                    {"updates": step, "curve": self.curve},
                    ckpt,
                )
        bar.close()
        return {"critic_wall_s": time.perf_counter() - start, "critic_updates": critic.updates}

    def _evaluate_curve(self, task: TaskConfig, step: int) -> None:
        result = evaluate(
            self.best_of_n(), task, self.cfg.eval_episodes, 16, self.cfg.eval_seed, progress=False
        )
        self.curve["updates"].append(step)
        self.curve["success"].append(result.success_rate)
        self.curve["ci95"].append(list(result.success_ci95))
        if self.writer is not None:
            self.writer.add_scalar("eval/best_of_n_success", result.success_rate, step)

    # ---------------------------------------------------------------- stage 3: extraction
    def best_of_n(self, critic: ChunkCritic | None = None) -> BestOfNPolicy:
        critic = critic or self.critic
        bon = self.cfg.best_of_n
        return BestOfNPolicy(
            self.base, critic.q, bon.n, bon.heads, self.cfg.seed, bon.inference_steps
        )

    def train_expo(self) -> tuple[ExpoPolicy, ExpoLearner]:
        """EXPO from a copy of the trained critic: joint critic + edit-policy updates."""
        critic = self.copy_critic(backup="best_of_n")
        learner = ExpoLearner(critic, self.cfg.expo, seed=self.cfg.seed)
        bar = tqdm(range(self.cfg.expo.updates), desc="expo", disable=not self.progress)
        for step in bar:
            metrics = learner.update(
                self.batches.sample(self.cfg.critic.batch_size, critic.generator)
            )
            if self.writer is not None and step % 50 == 0:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"expo/{k}", v, step)
        bon = self.cfg.best_of_n
        policy = ExpoPolicy(
            self.base, critic.q, learner.edit, bon.n, bon.heads, self.cfg.seed, bon.inference_steps
        )
        return policy, learner

    def train_q_weighted(self):
        """A fine-tuned copy of the base (Q-weighted denoising + BC) and its history."""
        weights, adv = advantage_weights(
            self.critic, self.data, self.candidates, self.cfg.q_weighted, self.cfg.best_of_n.heads
        )
        policy, history = q_weighted_finetune(
            self.base,
            self.data,
            weights,
            self.cfg.q_weighted,
            self.cfg.seed,
            self.progress,
            self.writer,
        )
        history["advantage_mean"] = float(adv.mean())
        history["weight_max"] = float(weights.max())
        return policy, history

    def copy_critic(self, **changes) -> ChunkCritic:
        """A copy of the critic (weights, optimiser state, update count); ``changes`` replace
        fields of its config (EXPO trains its copy with the best-of-N backup)."""
        critic = ChunkCritic(
            self.data.obs_dim,
            self.data.chunk_dim,
            replace(self.cfg.critic, **changes),
            seed=self.cfg.seed,
        )
        for name, module in self.critic.modules().items():
            critic.modules()[name].load_state_dict(module.state_dict())
        for name, opt in self.critic.optimizers().items():
            critic.optimizers()[name].load_state_dict(opt.state_dict())
        critic.updates = self.critic.updates
        return critic

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def settings(self) -> dict:
        return asdict(self.cfg)


def instantiate_reward_model(spec: dict | None) -> RewardModel:
    """``{_target_: dotted.Class, ...}`` -> a RewardModel (Hydra's instantiate)."""
    from hydra.utils import instantiate

    model = instantiate(spec)
    if not isinstance(model, RewardModel):
        raise TypeError(f"reward_model {spec} built a {type(model).__name__}, not a RewardModel")
    return model


def _base_fingerprint(base) -> list[bytes]:
    out = [type(base).__name__.encode()]
    if isinstance(base, torch.nn.Module):
        for name, tensor in sorted(base.state_dict().items()):
            out.append(name.encode() + tensor.detach().cpu().numpy().tobytes()[:4096])
    return out


def _writer(out: Path | None):
    if out is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _save(mods: dict, opts: dict, meta: dict, folder: Path) -> None:
    tensors, opt_meta = learner_tensors(mods, opts)
    meta = {**meta, "optimizers": opt_meta}
    save_training_state(folder, tensors, json.loads(json.dumps(meta)))


def _load(mods: dict, opts: dict, folder: Path) -> dict:
    tensors, meta = load_training_state(folder)
    load_learner(tensors, meta["optimizers"], mods, opts)
    return meta
