"""The chunk critic ``Q(s, a_{t:t+h})``: twin (or ensemble) LayerNorm heads over a state
history and a whole executed chunk, trained by TD with an unbiased h-step backup.

One update, top to bottom (B batch, K cached base samples per observation, C chunk size)::

    target   y = R_chunk + gamma^n (1 - done) * V(s')
             V(s') = max_k  heads(Q_targ(s', a'_k))      backup="best_of_n" (Q-chunking)
                   = V_expectile(s')                      backup="expectile" (in-sample, IQL)
    TD       sum over heads of (Q(s, a) - y)^2
    conserv. alpha * [ logsumexp_j Q(s, a_j) / T  -  Q(s, a_data) ],  a_j = base samples at s
             (clipped below at the Monte-Carlo return for "calql") and uniform random chunks

The base samples are cached per stored frame (see ``data.sample_candidates``), so an update
never runs the diffusion model.
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from robot_rl.offline.config import ChunkCriticConfig
from robot_rl.rl.networks import CriticEnsemble, mlp
from robot_rl.threads import learner_threads


def reduce_heads(q: torch.Tensor, how: str) -> torch.Tensor:
    """``[n, ...]`` head values -> ``[...]`` by 'min' or 'mean'."""
    return q.min(dim=0).values if how == "min" else q.mean(dim=0)


class ChunkCritic:
    """Q heads, their target copy, an optional expectile value network, and the update."""

    def __init__(self, obs_dim: int, chunk_dim: int, cfg: ChunkCriticConfig, seed: int = 0):
        self.cfg, self.obs_dim, self.chunk_dim = cfg, obs_dim, chunk_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = CriticEnsemble(
                obs_dim, chunk_dim, cfg.hidden_dims, cfg.n_heads, cfg.layer_norm
            )
            self.value = mlp(obs_dim, cfg.hidden_dims, 1, cfg.layer_norm)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0

    # ---------------------------------------------------------------- scoring
    def fit_obs_normalization(self, obs: torch.Tensor) -> None:
        """Standardise the heads' state input with the data's statistics (saved with them)."""
        self.q.obs_norm.fit(obs)
        self.q_target.obs_norm.load_state_dict(self.q.obs_norm.state_dict())

    def v(self, obs: torch.Tensor) -> torch.Tensor:
        """Expectile value ``[B]`` (inputs standardised like the heads')."""
        return self.value(self.q.obs_norm(obs)).squeeze(-1)

    @staticmethod
    def score(
        net: CriticEnsemble, obs: torch.Tensor, chunks: torch.Tensor, heads: str
    ) -> torch.Tensor:
        """obs ``[B, O]``, chunks ``[B, K, C]`` -> head-reduced Q ``[B, K]``."""
        b, k, c = chunks.shape
        q = net(obs.repeat_interleave(k, dim=0), chunks.reshape(b * k, c))
        return reduce_heads(q, heads).reshape(b, k)

    # ---------------------------------------------------------------- learning
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update. ``batch``: obs [B, O], action [B, C], reward [B], discount [B],
        next_obs [B, O], candidates [B, K, C] (base samples at obs), next_candidates
        [B, K', C] (at next_obs), mc_return [B]."""
        with learner_threads(len(batch["obs"]), self.cfg.hidden_dims):
            return self._update(batch)

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        obs, action = batch["obs"], batch["action"]
        metrics: dict[str, float] = {}
        if cfg.backup == "expectile":
            metrics.update(self._update_value(obs, action))
        with torch.no_grad():
            if cfg.backup == "best_of_n":
                next_v = (
                    self.score(
                        self.q_target, batch["next_obs"], batch["next_candidates"], cfg.target_heads
                    )
                    .max(dim=1)
                    .values
                )
            else:
                next_v = self.v(batch["next_obs"])
            target = batch["reward"] + batch["discount"] * next_v
        q_data = self.q(obs, action)  # [n, B]
        td = F.mse_loss(q_data, target.expand_as(q_data), reduction="none").mean(dim=1).sum()
        loss = td
        if cfg.conservative != "none" and cfg.cql_alpha > 0:
            gap = self._conservative_gap(obs, batch["candidates"], batch["mc_return"], q_data)
            loss = loss + cfg.cql_alpha * gap
            metrics["cql_gap"] = gap.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"chunk critic loss is {loss.item()} at update {self.updates}: lower critic.lr "
                f"(now {cfg.lr}) or check the rewards for NaN"
            )
        self.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.q_opt.step()
        with torch.no_grad():
            for p, tp in zip(self.q.parameters(), self.q_target.parameters(), strict=True):
                tp.lerp_(p, cfg.tau)
        self.updates += 1
        metrics.update(td_loss=td.item(), q_data=q_data.mean().item(), target=target.mean().item())
        return metrics

    def _conservative_gap(
        self, obs: torch.Tensor, candidates: torch.Tensor, mc_return: torch.Tensor, q_data
    ) -> torch.Tensor:
        """CQL's push-down of sampled chunks against the data's chunk, per head, averaged."""
        k = min(self.cfg.cql_samples, candidates.shape[1])
        candidates = candidates[:, :k]
        b, _, c = candidates.shape
        random = torch.rand(b, k, c, generator=self.generator) * 2 - 1
        chunks = torch.cat([candidates, random], dim=1)  # [B, 2K, C]
        q = self.q(obs.repeat_interleave(2 * k, dim=0), chunks.reshape(-1, c))
        q = q.reshape(q.shape[0], b, 2 * k)
        if self.cfg.conservative == "calql":
            # Cal-QL: the policy's (base samples') values are not pushed below what the
            # behaviour policy is known to reach from s (the data's Monte-Carlo return).
            bound = mc_return.view(1, b, 1).expand(q.shape[0], b, k)
            q = torch.cat([torch.maximum(q[..., :k], bound), q[..., k:]], dim=-1)
        t = self.cfg.cql_temperature
        pushed = t * torch.logsumexp(q / t, dim=-1)  # [n, B]
        return (pushed - q_data).mean(dim=1).sum()

    def _update_value(self, obs: torch.Tensor, action: torch.Tensor) -> dict[str, float]:
        """Expectile regression of V(s) on the target heads' Q of the data's chunk."""
        with torch.no_grad():
            q = reduce_heads(self.q_target(obs, action), self.cfg.target_heads)
        diff = q - self.v(obs)
        weight = torch.where(diff > 0, self.cfg.expectile, 1 - self.cfg.expectile)
        loss = (weight * diff**2).mean()
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return {"value_loss": loss.item()}

    # ---------------------------------------------------------------- checkpointing
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"q": self.q, "q_target": self.q_target, "value": self.value}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q_opt": self.q_opt, "value_opt": self.value_opt}
