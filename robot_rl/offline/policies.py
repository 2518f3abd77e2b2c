"""Chunk policies extracted from a chunk critic, usable by evaluation and the daemon.

* :class:`BestOfNPolicy`: N chunks from the steerable base in one batched call, act with the
  chunk of highest Q (Q-chunking's extraction).
* :class:`ExpoPolicy`: the same N base chunks plus each one changed by a Gaussian edit policy
  (bounded by ``edit_scale``), act with the highest-Q chunk among the 2N (EXPO-style).

Their checkpoint is a folder: ``config.json``, ``critic.safetensors`` (and ``edit.safetensors``)
and a copy of the base checkpoint under ``base/``, so the folder deploys on its own.
``load_policy`` reads it once this module is imported (``robot-rl`` imports it for every job).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from robot_rl.core.policy import ChunkPolicy, Observation, SteerableChunkPolicy, batch_size
from robot_rl.improvers.steered import flat_state
from robot_rl.offline.critic import reduce_heads
from robot_rl.policies import checkpoint as policy_checkpoint
from robot_rl.rl.networks import CriticEnsemble, TanhGaussianActor
from robot_rl.threads import few_threads

CRITIC_FILE = "critic.safetensors"
EDIT_FILE = "edit.safetensors"
BASE_DIR = "base"


class EditPolicy(torch.nn.Module):
    """Gaussian edit of a base chunk: (state history ``[B, O]``, executed chunk ``[B, C]``) ->
    edited chunk ``clip(chunk + edit_scale * tanh(Gaussian), -1, 1)`` and its log-probability."""

    def __init__(self, obs_dim: int, chunk_dim: int, hidden: tuple[int, ...], edit_scale: float):
        super().__init__()
        self.actor = TanhGaussianActor(obs_dim + chunk_dim, chunk_dim, hidden)
        self.obs_dim, self.chunk_dim, self.edit_scale = obs_dim, chunk_dim, float(edit_scale)
        self.hidden = tuple(hidden)
        with torch.no_grad():  # start as "no edit": a near-zero mean
            self.actor.trunk[-1].weight.mul_(1e-3)
            self.actor.trunk[-1].bias[:chunk_dim].zero_()

    def forward(
        self, obs: torch.Tensor, chunk: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        edit, log_prob = self.actor(torch.cat([obs, chunk], dim=-1), deterministic)
        return (chunk + self.edit_scale * edit).clamp(-1.0, 1.0), log_prob


class BestOfNPolicy(ChunkPolicy):
    """base (steerable, frozen) + chunk critic: act with the best of ``n`` base chunks."""

    policy_class = "BestOfNPolicy"

    def __init__(
        self,
        base: SteerableChunkPolicy,
        critic: CriticEnsemble,
        n: int = 32,
        heads: str = "mean",
        seed: int = 0,
        inference_steps: int | None = None,
    ):
        if not isinstance(base, SteerableChunkPolicy):
            raise TypeError(
                f"{type(base).__name__} is not steerable: best-of-N samples the base with its "
                "own noise; use a diffusion or flow policy"
            )
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        chunk_dim = base.n_action_steps * base.action_dim
        critic_chunk = critic.heads[0][0].in_features - critic.obs_norm.shift.shape[0]
        if critic_chunk != chunk_dim:
            raise ValueError(
                f"the critic scores {critic_chunk}-d chunks, the base executes "
                f"{base.n_action_steps} actions of {base.action_dim} ({chunk_dim}-d): the critic "
                "was trained for another base"
            )
        self.base, self.critic, self.n, self.heads = base, critic.eval(), int(n), heads
        self.inference_steps = inference_steps
        self.sampler = (
            base if inference_steps is None else with_inference_steps(base, inference_steps)
        )
        self.action_dim, self.horizon = base.action_dim, base.horizon
        self.n_action_steps, self.n_obs_steps = base.n_action_steps, base.n_obs_steps
        self.rng = np.random.default_rng(seed)

    @property
    def config(self):
        """The base's config: the same observations in, the same actions out."""
        return self.base.config

    @torch.no_grad()
    def candidates(
        self, obs: Observation, noise: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunks ``[B, M, H, A]`` and their Q ``[B, M]`` (M = n here, 2n for EXPO). ``noise``
        ``[B, n, *base.noise_shape]`` makes it deterministic; else N(0, I) is drawn."""
        b = batch_size(obs)
        if noise is None:
            noise = self.rng.standard_normal((b, self.n, *self.base.noise_shape))
        noise = np.asarray(noise, np.float32).reshape(b * self.n, *self.base.noise_shape)
        repeated = {k: np.repeat(np.asarray(v), self.n, axis=0) for k, v in obs.items()}
        # One robot's N chunks are small ops: one thread samples them about twice as fast as
        # two (and scores them 5x as fast); see robot_rl/threads.py.
        with few_threads(b * self.n):
            chunks = self.sampler.predict_chunk(repeated, noise)  # one batched call of B * n
            state = torch.from_numpy(flat_state(repeated))
            executed = torch.from_numpy(np.ascontiguousarray(chunks[:, : self.n_action_steps]))
            executed = executed.reshape(b * self.n, -1)
            chunks, scores = self._more_candidates(state, executed, chunks)
        m = chunks.shape[0] // b
        return chunks.reshape(b, m, *chunks.shape[1:]), scores.reshape(b, m)

    def _more_candidates(self, state, executed, chunks) -> tuple[np.ndarray, np.ndarray]:
        q = reduce_heads(self.critic(state, executed), self.heads)
        return chunks, q.numpy()

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        chunks, scores = self.candidates(obs)
        return chunks[np.arange(len(chunks)), scores.argmax(axis=1)]

    def reset(self) -> None:
        self.base.reset()

    def header(self) -> dict:
        hidden = [m.out_features for m in self.critic.heads[0] if isinstance(m, torch.nn.Linear)]
        return {
            "n": self.n,
            "heads": self.heads,
            "inference_steps": self.inference_steps,
            "obs_dim": self.critic.obs_norm.shift.shape[0],
            "chunk_dim": self.n_action_steps * self.action_dim,
            "hidden_dims": hidden[:-1],
            "n_heads": len(self.critic.heads),
            "layer_norm": any(isinstance(m, torch.nn.LayerNorm) for m in self.critic.heads[0]),
        }


class ExpoPolicy(BestOfNPolicy):
    """Best of the ``n`` base chunks and their ``n`` edits (the edit policy's mean)."""

    policy_class = "ExpoPolicy"

    def __init__(
        self, base, critic, edit: EditPolicy, n=32, heads="mean", seed=0, inference_steps=None
    ):
        super().__init__(base, critic, n, heads, seed, inference_steps)
        self.edit = edit.eval()

    def _more_candidates(self, state, executed, chunks) -> tuple[np.ndarray, np.ndarray]:
        edited, _ = self.edit(state, executed, deterministic=True)
        both = torch.cat([executed, edited])
        q = reduce_heads(self.critic(torch.cat([state, state]), both), self.heads)
        edited_chunks = chunks.copy()
        edited_chunks[:, : self.n_action_steps] = edited.numpy().reshape(
            len(chunks), self.n_action_steps, self.action_dim
        )
        # Per observation: its n base chunks first, then their n edits.
        b = len(chunks) // self.n
        stacked = np.concatenate(
            [
                chunks.reshape(b, self.n, *chunks.shape[1:]),
                edited_chunks.reshape(b, self.n, -1, self.action_dim),
            ],
            axis=1,
        )
        scores = torch.cat(
            [q[: len(chunks)].reshape(b, self.n), q[len(chunks) :].reshape(b, self.n)], 1
        )
        return stacked.reshape(b * 2 * self.n, *chunks.shape[1:]), scores.numpy()

    def header(self) -> dict:
        return {
            **super().header(),
            "edit_hidden_dims": list(self.edit.hidden),
            "edit_scale": self.edit.edit_scale,
        }


def check_inference_steps(base: SteerableChunkPolicy, steps: int) -> None:
    """Raises unless ``base`` can sample with ``steps`` DDIM steps (a diffusion policy with at
    least that many training noise levels)."""
    from robot_rl.policies.diffusion import DiffusionPolicy

    if not isinstance(base, DiffusionPolicy):
        raise TypeError(
            f"best_of_n.inference_steps needs a DiffusionPolicy base, got {type(base).__name__}: "
            "set improver.best_of_n.inference_steps=null to sample with the base's own steps"
        )
    if steps > base.config.num_train_timesteps:
        raise ValueError(
            f"best_of_n.inference_steps={steps} > the base's {base.config.num_train_timesteps} "
            "training noise levels"
        )


def with_inference_steps(base: SteerableChunkPolicy, steps: int) -> SteerableChunkPolicy:
    """The same diffusion policy (shared weights) sampling with ``steps`` DDIM steps."""
    from robot_rl.policies.diffusion import DiffusionPolicy

    check_inference_steps(base, steps)
    fast = DiffusionPolicy(
        dataclasses.replace(base.config, num_inference_steps=steps), base.normalizer
    )
    fast.load_state_dict(base.state_dict())
    return fast.eval()


def save_offline_policy(policy: BestOfNPolicy, path: str | Path, base_path: str | Path) -> Path:
    """Write the policy's folder (with a copy of the base checkpoint) atomically."""
    path, base_path = Path(path), Path(base_path)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        shutil.copytree(base_path, partial / BASE_DIR)
        header = {
            "format_version": 1,
            "policy_class": policy.policy_class,
            "config": {**policy.header(), "base_source": str(base_path.resolve())},
        }
        (partial / "config.json").write_text(json.dumps(header, indent=2) + "\n")
        save_file(_tensors(policy.critic), str(partial / CRITIC_FILE))
        if isinstance(policy, ExpoPolicy):
            save_file(_tensors(policy.edit), str(partial / EDIT_FILE))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            path.rename(old)
        partial.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_offline_policy(path: str | Path, config: dict, device: str = "cpu") -> BestOfNPolicy:
    """Rebuild a best-of-N or EXPO policy from its folder (the loader ``load_policy`` calls)."""
    path = Path(path)
    if not (path / BASE_DIR).is_dir():
        raise FileNotFoundError(
            f"{path}: no {BASE_DIR}/ folder with the base checkpoint; save the policy again"
        )
    try:
        base = policy_checkpoint.load_policy(path / BASE_DIR, device=device)
        critic = CriticEnsemble(
            config["obs_dim"],
            config["chunk_dim"],
            config["hidden_dims"],
            config["n_heads"],
            config["layer_norm"],
        )
        critic.load_state_dict(_load(path / CRITIC_FILE))
    except KeyError as err:
        raise ValueError(f"{path / 'config.json'} lacks the setting {err}; save it again") from err
    steps = config.get("inference_steps")
    if "edit_scale" not in config:
        return BestOfNPolicy(base, critic, config["n"], config["heads"], inference_steps=steps)
    edit = EditPolicy(
        config["obs_dim"],
        config["chunk_dim"],
        tuple(config["edit_hidden_dims"]),
        config["edit_scale"],
    )
    edit.load_state_dict(_load(path / EDIT_FILE))
    return ExpoPolicy(base, critic, edit, config["n"], config["heads"], inference_steps=steps)


def _load(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the policy folder is incomplete")
    return load_file(str(file))
