"""DSRL: steer a frozen diffusion policy by learning the latent noise it denoises.

Wagenmaker et al., 2025. The MDP seen by the learner is the chunk MDP: state history ``s``,
action = latent noise ``w`` in ``[-bound, bound]^(H*A)``, the executed chunk is
``base(s, w)[:Ta]``, reward = the chunk's discounted reward.

* ``variant="sac"`` (DSRL-SAC): SAC directly in noise space.
* ``variant="na"`` (DSRL-NA, noise-aliased): a critic over executed action chunks ``Q_A(s, a)``
  is trained by TD on the transitions; a noise critic ``Q_W(s, w)`` is distilled from it through
  the base, ``Q_W(s, w) ~ Q_A(s, base(s, w))``, for noises drawn inside the bound; the noise actor
  maximises ``Q_W``. Because many noises map to one chunk, every transition teaches ``Q_W``
  about all of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from robot_rl.core import keys
from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.improvers.steered import SteeredPolicy
from robot_rl.rl.networks import CriticEnsemble, InputNorm
from robot_rl.rl.sac import SAC, SACConfig, _polyak, check_finite
from robot_rl.threads import learner_threads


@dataclass
class DSRLConfig:
    """Settings of latent-noise steering."""

    variant: str = "sac"
    """'sac' (SAC in noise space) or 'na' (noise-aliased: action critic distilled to noise)"""
    noise_bound: float = 1.5
    """latent noise is squashed into [-bound, bound] (1.5 as the paper uses on robomimic)"""
    env_steps: int = 30_000
    """environment steps of training (warm-up included)"""
    warmup_env_steps: int = 2_000
    """env steps acting with the base policy (noise ~ N(0, I)) before any update"""
    n_envs: int = 8
    """vectorised training environments"""
    async_envs: bool = False
    """step the training environments in their own processes (gymnasium's AsyncVectorEnv, one
    process per environment); the policy still runs batched in the learner's process"""
    gamma: float = 0.99
    """per-step discount; a chunk of k steps is discounted by gamma^k"""
    reward_type: str | None = "sparse"
    """task reward the learner sees: 'sparse' (1 on success, as on a real robot), 'dense',
    'progress' (1 on success plus the change of the task's shaped reward, see
    :class:`robot_rl.core.envs.ProgressReward`), or None for the task's own setting. Shaped
    per-step rewards with termination on success can pay more for hovering near the goal than
    for reaching it; 'progress' cannot"""
    bootstrap_timeouts: bool = False
    """what the critic sees at an episode's time limit. False (default): the limit ends the
    return like a termination, so a chunk that runs out the clock is worth its own reward and
    nothing after it. That is the task as our tasks and a robot's episode budget define it
    (success within the limit) when the observation has no clock. True bootstraps through the
    limit, as for an endless task (Pardo et al., 2018, "Time Limits in RL"); then a failed
    episode never shows the critic a low target, since from a near miss the box could still
    be pushed in given more time: on push the critic's value became flat in the noise and the
    actor's choice no better than chance (see the README's DSRL section)"""
    clock: bool = False
    """the noise actor and its critics also read the episode clock (the share of the step
    budget used, :class:`robot_rl.core.envs.EpisodeClock`). With the return ending at the time
    limit, the value of a state depends on the time left, which the task's observation does
    not show; the clock makes the chunk MDP Markov again (Pardo et al., 2018). The base never
    sees it"""
    sac: SACConfig = field(
        default_factory=lambda: SACConfig(hidden_dims=(256, 256), init_alpha=1e-3)
    )
    """the noise actor's (and noise critic's) SAC settings"""
    distill_batch: int = 256
    """DSRL-NA: noises per update for distilling Q_W from Q_A"""
    na_bootstrap: str = "action"
    """DSRL-NA's TD target at the next state: 'action' (Q_A at the base's denoising of the
    actor's next noise, as the paper; one more denoised batch per update) or 'noise' (the
    distilled Q_W at the actor's next noise: no denoising in the target, half an update's cost)"""
    start_as_base: bool = True
    """the untrained noise actor samples noise spread like the base's N(0, I) (state-independent),
    so learning starts from the base's behaviour; otherwise it starts near the zero noise"""
    deterministic: bool = True
    """the steered policy (evaluation, checkpoint, deployment) acts with the noise actor's mean;
    SAC's sampling is for exploration while training"""
    n_action_steps: int | None = None
    """steps of each denoised chunk executed before the noise actor chooses again; None keeps
    the base's own. Shorter chunks let the actor correct more often (the reference uses 4 on
    robomimic) for more base calls per env step"""
    eval_every: int = 5_000
    """env steps between evaluations"""
    eval_episodes: int = 50
    """episodes per evaluation"""
    eval_seed: int = 10_000
    """seed of the evaluation episodes"""
    replay_capacity: int = 200_000
    """chunk transitions kept"""
    seed: int = 0
    """seed of the learner and the training environments"""

    def __post_init__(self) -> None:
        if self.variant not in ("sac", "na"):
            raise ValueError(f"DSRL variant must be 'sac' or 'na', got {self.variant!r}")
        if self.na_bootstrap not in ("action", "noise"):
            raise ValueError(f"na_bootstrap must be 'action' or 'noise', got {self.na_bootstrap!r}")
        if not self.noise_bound > 0:
            raise ValueError(
                f"noise_bound must be > 0, got {self.noise_bound}; 1.5 is a good default"
            )
        if self.reward_type not in (None, "sparse", "dense", "progress"):
            raise ValueError(
                "reward_type must be 'sparse', 'dense', 'progress' or None, "
                f"got {self.reward_type!r}"
            )
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1 or None, got {self.n_action_steps}")
        if self.env_steps < 1 or self.n_envs < 1 or self.eval_every < 1:
            raise ValueError("env_steps, n_envs and eval_every must be >= 1")
        if isinstance(self.sac, dict):
            self.sac = SACConfig(**self.sac)


def base_like_std(bound: float, n: int = 4096) -> float:
    """The pre-tanh std ``s`` for which ``bound * tanh(s * z)``, z ~ N(0, 1), has unit spread
    like the base's own noise (bisection on fixed quantiles; capped when bound <= 1)."""
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.5 / n, 1 - 0.5 / n, n))
    lo, hi = 1e-2, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (bound * torch.tanh(mid * z)).std() < 1.0 else (lo, mid)
    return 0.5 * (lo + hi)


class DSRL:
    """The learner: a SAC noise actor (and for NA an action critic) over a frozen base.

    ``observe`` takes a batch of chunk transitions; ``update`` runs the learner's gradient
    steps; ``noise`` chooses latent noise for acting. The training loop lives in
    :mod:`robot_rl.improvers.online`, shared with other online improvers."""

    def __init__(self, base: SteerableChunkPolicy, obs_dim: int, cfg: DSRLConfig):
        self.cfg, self.base = cfg, base
        if getattr(base, "reads_clock", False) and not cfg.clock:
            raise ValueError(
                "the base is a steered policy that reads the episode clock: steer it again "
                "with improver.clock=true, so the clock reaches it"
            )
        torch.manual_seed(cfg.seed)
        self.noise_dim = int(np.prod(base.noise_shape))
        self.state_dim = obs_dim  # the flat state history; the clock, if read, comes after it
        self.obs_dim = obs_dim + int(cfg.clock)
        self.sac = SAC(self.obs_dim, self.noise_dim, cfg.sac)
        if cfg.start_as_base:
            self.sac.actor.start_as(base_like_std(cfg.noise_bound))
        self.policy = SteeredPolicy(
            base,
            self.sac.actor,
            cfg.noise_bound,
            cfg.deterministic,
            n_action_steps=cfg.n_action_steps,
            reads_clock=cfg.clock,
        )
        self.n_action_steps = self.policy.n_action_steps
        self.chunk_dim = self.n_action_steps * base.action_dim
        if cfg.variant == "na":
            hidden, n = cfg.sac.hidden_dims, cfg.sac.n_critics
            self.action_critic = CriticEnsemble(
                self.obs_dim, self.chunk_dim, hidden, n, cfg.sac.layer_norm
            ).to(cfg.sac.device)
            self.action_critic_target = copy.deepcopy(self.action_critic).requires_grad_(False)
            self.action_critic_opt = torch.optim.Adam(
                self.action_critic.parameters(), lr=cfg.sac.critic_lr
            )
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    # acting ---------------------------------------------------------------------------------
    def noise(self, state: np.ndarray, explore: bool, warmup: bool) -> np.ndarray:
        """Latent noise ``[B, noise_dim]`` in the bound, divided by the bound (SAC's [-1, 1])."""
        if warmup:  # the base policy's own behaviour: w ~ N(0, I), clipped to the bound
            w = self.rng.standard_normal((state.shape[0], self.noise_dim))
            return np.clip(w / self.cfg.noise_bound, -0.999, 0.999).astype(np.float32)
        return self.sac.act(torch.from_numpy(state), deterministic=not explore).cpu().numpy()

    def act(self, state: np.ndarray, explore: bool, warmup: bool) -> tuple[np.ndarray, np.ndarray]:
        """For a collector: the stored action row ``[scaled noise | executed chunk]`` and the
        executed chunk ``[B, Ta, A]``."""
        noise = self.noise(state, explore=explore, warmup=warmup)
        chunk = self.base_chunk(state, noise)
        return np.concatenate([noise, chunk.reshape(len(chunk), -1)], axis=1), chunk

    def acting_weights(self) -> dict[str, np.ndarray]:
        """What a remote copy needs to act like this learner: the noise actor's tensors
        (with its input statistics), as CPU arrays."""
        return {k: v.detach().cpu().numpy() for k, v in self.sac.actor.state_dict().items()}

    def load_acting_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.sac.actor.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})

    @property
    def reads_clock(self) -> bool:
        """Whether a collector must hand :meth:`act` the episode clock after the state."""
        return self.cfg.clock

    def base_chunk(self, state_hist: np.ndarray, scaled_noise: np.ndarray) -> np.ndarray:
        """Executed chunk ``[B, Ta, A]`` of the base for the actor's inputs (flat states, then
        the clock if read) and noise in [-1, 1]."""
        b, to = state_hist.shape[0], self.base.n_obs_steps
        obs = {keys.STATE: state_hist[:, : self.state_dim].reshape(b, to, -1)}
        if self.cfg.clock:  # for a base that is itself a clock-reading steered policy
            obs[keys.EPISODE_CLOCK] = np.repeat(state_hist[:, None, self.state_dim :], to, axis=1)
        w = (self.cfg.noise_bound * scaled_noise).reshape(-1, *self.base.noise_shape)
        return self.base.predict_chunk(obs, w)[:, : self.n_action_steps]

    # learning -------------------------------------------------------------------------------
    def fit_obs_normalization(self, obs: torch.Tensor) -> None:
        """Standardises every network's input with the statistics of ``obs`` (the warm-up
        rollouts' states), once, before the first update; saved with the weights."""
        for module in self.modules().values():
            for sub in module.modules():
                if isinstance(sub, InputNorm):
                    sub.fit(obs)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update. ``batch["action"]`` holds [scaled noise | executed chunk] per row."""
        sac = self.cfg.sac
        with learner_threads(len(batch["obs"]), sac.hidden_dims, sac.device):
            return self._update(batch)

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        noise, chunk = batch["action"].split([self.noise_dim, self.chunk_dim], dim=-1)
        if self.cfg.variant == "sac":
            return self.sac.update({**batch, "action": noise})
        metrics = self._update_action_critic({**batch, "action": chunk})
        metrics.update(self._distill_noise_critic(batch["obs"]))
        self.sac.updates += 1
        if self.sac.updates % self.cfg.sac.actor_every == 0:
            metrics.update(self.sac.update_actor(batch["obs"]))
        return metrics

    def _update_action_critic(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        with torch.no_grad():
            next_noise, _ = self.sac.actor(batch["next_obs"])
            if self.cfg.na_bootstrap == "noise":
                next_q = self.sac.critic(batch["next_obs"], next_noise).min(dim=0).values
            else:
                next_chunk = self._chunks(batch["next_obs"], next_noise)
                next_q = self.action_critic_target(batch["next_obs"], next_chunk).min(dim=0).values
            target = batch["reward"] + batch["discount"] * next_q
        q = self.action_critic(batch["obs"], batch["action"])
        loss = F.mse_loss(q, target.expand_as(q))
        check_finite("action critic loss", loss)
        self.action_critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.action_critic_opt.step()
        _polyak(self.action_critic, self.action_critic_target, self.cfg.sac.tau)
        return {"action_critic_loss": loss.item(), "q_action_mean": q.mean().item()}

    def _distill_noise_critic(self, obs: torch.Tensor) -> dict[str, float]:
        # noises inside the bound: half from N(0, I) clipped (the base's own), half from the actor
        n = min(self.cfg.distill_batch, obs.shape[0])
        obs = obs[:n]
        half = n // 2
        gaussian = (
            torch.randn(half, self.noise_dim, generator=self.generator) / self.cfg.noise_bound
        ).to(obs.device)
        with torch.no_grad():
            actor_noise, _ = self.sac.actor(obs[half:])
            noise = torch.cat([gaussian.clamp(-0.999, 0.999), actor_noise])
            target = self.action_critic(obs, self._chunks(obs, noise)).mean(dim=0)
        q = self.sac.critic(obs, noise)
        loss = F.mse_loss(q, target.expand_as(q))
        check_finite("noise critic distillation loss", loss)
        self.sac.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sac.critic_opt.step()
        return {"critic_loss": loss.item(), "q_mean": q.mean().item()}

    def _chunks(self, obs: torch.Tensor, scaled_noise: torch.Tensor) -> torch.Tensor:
        chunk = self.base_chunk(obs.cpu().numpy(), scaled_noise.cpu().numpy())
        flat = np.ascontiguousarray(chunk.reshape(chunk.shape[0], -1))
        return torch.from_numpy(flat).to(obs.device)

    # checkpointing --------------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"sac": self.sac}
        if self.cfg.variant == "na":
            mods.update(
                action_critic=self.action_critic, action_critic_target=self.action_critic_target
            )
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {
            "actor_opt": self.sac.actor_opt,
            "critic_opt": self.sac.critic_opt,
            "alpha_opt": self.sac.alpha_opt,
        }
        if self.cfg.variant == "na":
            opts["action_critic_opt"] = self.action_critic_opt
        return opts
