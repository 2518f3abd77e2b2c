"""The steered policy: a frozen steerable base plus a noise actor that chooses its latent noise.

It is itself a steerable chunk policy: its own latent ``z ~ N(0, I)`` is the noise actor's
reparameterisation noise, ``w = bound * tanh(mean(s) + std(s) * z)``. As for every steerable
policy, ``z = None`` draws the latent from N(0, I) (the stochastic policy SAC trained);
``deterministic=True`` acts with the actor's mean instead. So it can be evaluated, deployed, and
steered again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from robot_rl.core import keys
from robot_rl.core.policy import Observation, SteerableChunkPolicy, batch_size
from robot_rl.rl.networks import TanhGaussianActor


def flat_state(obs: Observation) -> np.ndarray:
    """``{"state": [B, To, D]}`` -> ``[B, To * D]`` float32, the noise actor's input."""
    if keys.STATE not in obs:
        raise KeyError(
            f"the noise actor reads 'state', got keys {sorted(obs)}; enable state observations"
        )
    state = np.asarray(obs[keys.STATE], dtype=np.float32)
    return state.reshape(state.shape[0], -1)


def actor_input(obs: Observation, clock: bool) -> np.ndarray:
    """The noise actor's (and its critics') input: :func:`flat_state`, followed with ``clock``
    by the latest episode clock, ``[B, To * D + 1]`` (:class:`robot_rl.core.envs.EpisodeClock`)."""
    state = flat_state(obs)
    if not clock:
        return state
    if keys.EPISODE_CLOCK not in obs:
        raise KeyError(
            f"this learner reads the episode clock, but the observation has only {sorted(obs)}: "
            "build the environment with make_policy_env (it adds the clock for a policy with "
            "reads_clock) or wrap it in robot_rl.core.envs.EpisodeClock"
        )
    now = np.asarray(obs[keys.EPISODE_CLOCK], dtype=np.float32).reshape(len(state), -1)[:, -1:]
    return np.concatenate([state, now], axis=1)


class SteeredPolicy(SteerableChunkPolicy):
    """base (steerable, frozen) + noise actor ``state history -> noise [H, A]``."""

    def __init__(
        self,
        base: SteerableChunkPolicy,
        actor: TanhGaussianActor,
        noise_bound: float,
        deterministic: bool = False,
        seed: int = 0,
        n_action_steps: int | None = None,
        reads_clock: bool = False,
    ):
        if not isinstance(base, SteerableChunkPolicy):
            raise TypeError(
                f"{type(base).__name__} is not steerable: DSRL needs a policy that denoises "
                "a given noise (SteerableChunkPolicy), e.g. a diffusion or flow policy"
            )
        if noise_bound <= 0:
            raise ValueError(f"noise_bound must be > 0, got {noise_bound}")
        self.base, self.actor, self.noise_bound = base, actor, float(noise_bound)
        self.action_dim, self.horizon = base.action_dim, base.horizon
        self.n_action_steps = n_action_steps or base.n_action_steps
        if not 1 <= self.n_action_steps <= base.horizon:
            raise ValueError(
                f"n_action_steps must be in [1, {base.horizon}] (the base's horizon), "
                f"got {self.n_action_steps}"
            )
        self.n_obs_steps = base.n_obs_steps
        self.noise_shape = (int(np.prod(base.noise_shape)),)
        self.deterministic = deterministic
        self.actor_reads_clock = bool(reads_clock)
        # the environment must carry the clock if this actor or a steered base reads it
        self.reads_clock = self.actor_reads_clock or getattr(base, "reads_clock", False)
        self.rng = np.random.default_rng(seed)

    @property
    def config(self):
        """The base's config: a steered policy reads the same observations and writes the
        same actions, so it can be checked against a task and steered again."""
        return self.base.config

    @torch.no_grad()
    def base_noise(self, obs: Observation, z: np.ndarray | None = None) -> np.ndarray:
        """The latent noise handed to the base, ``[B, *base.noise_shape]``, within the bound."""
        device = next(self.actor.parameters()).device  # the learner's, e.g. cuda
        mean, log_std = self.actor.gaussian(
            torch.from_numpy(actor_input(obs, self.actor_reads_clock)).to(device)
        )
        pre = mean
        if z is None and not self.deterministic:
            z = self.rng.standard_normal(mean.shape)
        if z is not None:
            z = torch.as_tensor(z, dtype=torch.float32, device=device).reshape(mean.shape)
            pre = mean + log_std.exp() * z
        w = self.noise_bound * torch.tanh(pre)
        return w.cpu().numpy().reshape(batch_size(obs), *self.base.noise_shape)

    def predict_chunk(self, obs: Observation, noise: np.ndarray | None = None) -> np.ndarray:
        return self.base.predict_chunk(obs, self.base_noise(obs, noise))

    def reset(self) -> None:
        self.base.reset()


STEERED_FILE = "actor.safetensors"


def save_steered(policy: SteeredPolicy, path: str | Path, base_path: str | Path) -> Path:
    """A steered policy's checkpoint folder: ``config.json`` naming the base checkpoint (by
    path, not copied) plus ``actor.safetensors``; written atomically."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    header = {
        "format_version": 1,
        "policy_class": "SteeredPolicy",
        "config": {
            "base_path": str(Path(base_path).resolve()),
            "noise_bound": policy.noise_bound,
            "deterministic": policy.deterministic,
            "n_action_steps": policy.n_action_steps,
            "reads_clock": policy.actor_reads_clock,
            "obs_dim": policy.actor.obs_dim,
            "noise_dim": policy.actor.act_dim,
            "hidden_dims": [
                m.out_features for m in policy.actor.trunk if isinstance(m, torch.nn.Linear)
            ][:-1],
            "layer_norm": any(isinstance(m, torch.nn.LayerNorm) for m in policy.actor.trunk),
        },
    }
    (partial / "config.json").write_text(json.dumps(header, indent=2) + "\n")
    save_file(
        {k: v.contiguous() for k, v in policy.actor.state_dict().items()},
        str(partial / STEERED_FILE),
    )
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)
    return path


def load_steered(path: str | Path, config: dict, device: str = "cpu") -> SteeredPolicy:
    """Rebuild a steered policy: load its base from ``config["base_path"]``, then the actor."""
    from robot_rl.policies.checkpoint import load_policy

    path = Path(path)
    base_path = Path(config["base_path"])
    if not base_path.is_dir():
        raise FileNotFoundError(
            f"{path / 'config.json'}: base checkpoint {base_path} is missing; the steered policy "
            "references its base by path: restore it there or edit base_path"
        )
    return steered_with_base(path, config, load_policy(base_path, device=device))


def steered_with_base(path: str | Path, config: dict, base) -> SteeredPolicy:
    """The steered policy saved at ``path`` (its ``config``) around an already loaded base,
    e.g. one a caller keeps cached across weight pushes."""
    actor = TanhGaussianActor(
        config["obs_dim"], config["noise_dim"], config["hidden_dims"], config["layer_norm"]
    )
    weights = Path(path) / STEERED_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"steered checkpoint {path} has no {STEERED_FILE}")
    actor.load_state_dict(load_file(str(weights)))
    return SteeredPolicy(
        base,
        actor.eval(),
        config["noise_bound"],
        config.get("deterministic", False),
        n_action_steps=config.get("n_action_steps"),
        reads_clock=config.get("reads_clock", False),
    )
