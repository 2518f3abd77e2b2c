"""Settings of chunked offline RL, one dataclass per part; ``ChunkedOfflineConfig`` composes them
and is what ``configs/improver/chunked_offline.yaml`` validates against."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

REWARDS = ("sparse", "dense", "model")
BACKUPS = ("best_of_n", "expectile")
CONSERVATIVE = ("none", "cql", "calql")
HEAD_REDUCTIONS = ("min", "mean")
EXTRACTIONS = ("best_of_n", "expo", "q_weighted")
ONLINE_MODES = ("retain", "wsrl")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; choose one of {list(allowed)}")


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


@dataclass
class ChunkCriticConfig:
    """The chunk critic ``Q(s, a_{t:t+h})`` learned from the store."""

    hidden_dims: tuple[int, ...] = (128, 128)
    """widths of each Q head's LayerNorm MLP"""
    n_heads: int = 10
    """Q heads of the ensemble (2: twin critics). On push, best-of-N picked better with 5-10
    heads than with 2 (0.63-0.66 against 0.60, median of 3 seeds; README)"""
    layer_norm: bool = True
    """LayerNorm in every hidden layer (keeps unseen chunks from being over-extrapolated)"""
    gamma: float = 0.99
    """per-step discount; a chunk of n steps is discounted by gamma^n"""
    bootstrap_timeouts: bool = False
    """a chunk that reaches the end of an episode that did not terminate (the time limit, a
    stopped recording): False ends the return there, as for a task scored within its time
    limit; True bootstraps from the last stored frame, as for an endless task. Bootstrapping
    makes a failed episode look like one that had time left (see DSRL's option of the name)"""
    backup: str = "expectile"
    """TD target at the chunk's end: 'best_of_n' (max of Q over base samples at s', as in
    Q-chunking) or 'expectile' (in-sample, behaviour-regularised: a value network fitted by
    expectile regression on the data's chunks, as in IQL; needs no base samples in the target)"""
    target_heads: str = "min"
    """how the target combines the heads: 'min' (pessimistic) or 'mean'"""
    expectile: float = 0.9
    """tau of the expectile value network (backup='expectile' and Q-weighted advantages)"""
    conservative: str = "none"
    """conservative term: 'cql' (push down Q of base samples and random chunks below the data's),
    'calql' (the same, with base samples' Q clipped below at the data's Monte-Carlo return, so
    values stay calibrated for online fine-tuning), or 'none'"""
    cql_alpha: float = 0.1
    """weight of the conservative term"""
    cql_temperature: float = 1.0
    """temperature of the conservative term's log-sum-exp"""
    cql_samples: int = 4
    """base samples (of the cached ones) and as many uniform random chunks pushed down per
    observation by the conservative term"""
    samples: int = 8
    """base-policy chunk samples cached per stored observation (backup and conservative term)"""
    batch_size: int = 256
    """transitions per update"""
    lr: float = 3e-4
    """Adam learning rate"""
    tau: float = 0.005
    """Polyak rate of the target network"""
    updates: int = 2_000
    """gradient updates of offline training"""

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        _choice("critic.backup", self.backup, BACKUPS)
        _choice("critic.target_heads", self.target_heads, HEAD_REDUCTIONS)
        _choice("critic.conservative", self.conservative, CONSERVATIVE)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"critic.gamma must be in (0, 1], got {self.gamma}")
        if not 0.5 <= self.expectile < 1:
            raise ValueError(f"critic.expectile must be in [0.5, 1), got {self.expectile}")
        if (
            min(self.n_heads, self.samples, self.batch_size, self.cql_samples) < 1
            or self.updates < 0
        ):
            raise ValueError(
                "critic.n_heads, samples, cql_samples and batch_size must be >= 1, updates >= 0"
            )
        _positive(lr=self.lr, tau=self.tau, cql_temperature=self.cql_temperature)
        if self.cql_alpha < 0:
            raise ValueError(f"critic.cql_alpha must be >= 0, got {self.cql_alpha}")


@dataclass
class BestOfNConfig:
    """Best-of-N extraction: N chunks from the base, act with the argmax of Q."""

    n: int = 32
    """chunks sampled from the base per decision (one batched call)"""
    heads: str = "min"
    """how the heads score a chunk when acting: 'min' (pessimistic: a chunk only some heads
    like is passed over) or 'mean'"""
    inference_steps: int | None = 3
    """denoising steps of the N samples when acting (None: the base's own); fewer steps of the
    same DDIM sampler make the N samples cheaper (a :class:`DiffusionPolicy` base only; set
    None for others). On push at N = 32 on 2 cores: p99 19-23 ms with 3 steps, 30-38 ms with
    5, 45-50 ms with the base's 10; success 0.66 / 0.68 (3 / 5 steps, 3 seeds) and 0.62 / 0.60
    (5 / 10 steps)"""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"best_of_n.n must be >= 1, got {self.n}")
        if self.inference_steps is not None and self.inference_steps < 1:
            raise ValueError(f"best_of_n.inference_steps must be >= 1, got {self.inference_steps}")
        _choice("best_of_n.heads", self.heads, HEAD_REDUCTIONS)


@dataclass
class ExpoConfig:
    """EXPO-style extraction: a Gaussian edit policy on top of the base's samples."""

    edit_scale: float = 0.3
    """largest change the edit policy may make to any action of a base chunk"""
    hidden_dims: tuple[int, ...] = (128, 128)
    """widths of the edit policy's MLP"""
    samples: int = 4
    """cached base samples per observation that the edit policy learns to edit per update"""
    alpha: float = 0.01
    """entropy weight of the edit policy's objective"""
    lr: float = 3e-4
    """Adam learning rate of the edit policy"""
    updates: int = 3_000
    """joint critic + edit-policy updates: the critic's copy is trained with a best-of-(base
    and edited samples) backup, whatever ``critic.backup`` is, so edits enter the TD target"""

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        _positive(edit_scale=self.edit_scale, lr=self.lr, samples=self.samples)
        if self.alpha < 0 or self.updates < 0:
            raise ValueError("expo.alpha and expo.updates must be >= 0")


@dataclass
class QWeightedConfig:
    """Fine-tuning the base diffusion policy with a Q-weighted denoising loss (CO-RFT's way)."""

    steps: int = 1_000
    """gradient steps of fine-tuning"""
    batch_size: int = 256
    """windows per step"""
    lr: float = 1e-4
    """AdamW learning rate"""
    temperature: float = 0.05
    """advantage temperature: weight = exp(A / temperature), A = Q(s, a) - V(s)"""
    max_weight: float = 20.0
    """weights are clipped at this value (before normalising to mean 1)"""
    bc_weight: float = 0.5
    """weight of the plain (unweighted) behaviour-cloning denoising loss kept beside it"""

    def __post_init__(self) -> None:
        _positive(lr=self.lr, temperature=self.temperature, max_weight=self.max_weight)
        if self.steps < 0 or self.batch_size < 1 or self.bc_weight < 0:
            raise ValueError("q_weighted.steps >= 0, batch_size >= 1 and bc_weight >= 0")


@dataclass
class OnlineConfig:
    """Offline -> online: continue training with rollouts in an environment."""

    env_steps: int = 0
    """online environment steps (0: offline only)"""
    mode: str = "retain"
    """'retain' (batches mix offline and online data half and half) or 'wsrl' (warm-up
    rollouts of the offline policy, then online data only)"""
    warmup_env_steps: int = 1_000
    """WSRL: env steps of offline-policy rollouts before the first online update"""
    n_envs: int = 8
    """vectorised training environments"""
    utd_ratio: int = 2
    """critic updates per chunk transition collected"""
    epsilon: float = 0.1
    """exploration: probability of acting with a random one of the N base samples"""
    eval_every: int = 2_500
    """env steps between evaluations"""
    replay_capacity: int = 100_000
    """online chunk transitions kept"""

    def __post_init__(self) -> None:
        _choice("online.mode", self.mode, ONLINE_MODES)
        if self.env_steps < 0 or self.warmup_env_steps < 0:
            raise ValueError("online.env_steps and warmup_env_steps must be >= 0")
        if self.n_envs < 1 or self.utd_ratio < 0 or self.eval_every < 1:
            raise ValueError("online.n_envs, eval_every >= 1 and utd_ratio >= 0")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"online.epsilon must be in [0, 1], got {self.epsilon}")


@dataclass
class ChunkedOfflineConfig:
    """``robot-rl improve improver=chunked_offline``: everything the improver reads."""

    store: list[str] = field(default_factory=lambda: ["datasets/push_mixed.zarr"])
    """episode store(s) to learn from (a path or a list; all must share action/state sizes)"""
    reward: str = "sparse"
    """rewards the critic learns: 'sparse' (1 on success, from is_success), 'dense' (the
    stored per-step reward) or 'model' (relabelled by ``reward_model``)"""
    reward_model: dict[str, Any] | None = None
    """reward='model': ``{_target_: dotted.Class, ...}`` of a RewardModel, instantiated by Hydra"""
    extract: list[str] = field(default_factory=lambda: list(EXTRACTIONS))
    """policies to extract and evaluate: any of best_of_n, expo, q_weighted"""
    critic: ChunkCriticConfig = field(default_factory=ChunkCriticConfig)
    """the chunk critic"""
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    """best-of-N extraction"""
    expo: ExpoConfig = field(default_factory=ExpoConfig)
    """EXPO-style edit policy"""
    q_weighted: QWeightedConfig = field(default_factory=QWeightedConfig)
    """Q-weighted diffusion fine-tuning"""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    """offline -> online fine-tuning of the best-of-N (or EXPO) policy"""
    online_policy: str = "best_of_n"
    """which extracted policy continues online: best_of_n or expo"""
    eval_episodes: int = 50
    """episodes per evaluation"""
    eval_every: int = 2_000
    """critic updates between best-of-N evaluations during offline training (learning curve)"""
    eval_seed: int = 10_000
    """seed of the evaluation episodes"""
    checkpoint_every: int = 1_000
    """critic updates between resumable checkpoints"""
    seed: int = 0
    """seed of the learners and of the base samples"""

    def __post_init__(self) -> None:
        if isinstance(self.store, str):
            self.store = [self.store]
        self.store = list(self.store)
        if not self.store:
            raise ValueError("store is empty; give at least one episode store path")
        _choice("reward", self.reward, REWARDS)
        if self.reward == "model" and not self.reward_model:
            raise ValueError(
                "reward='model' needs reward_model={_target_: dotted.RewardModelClass, ...}"
            )
        self.extract = list(self.extract)
        for name in self.extract:
            _choice("extract", name, EXTRACTIONS)
        _choice("online_policy", self.online_policy, ("best_of_n", "expo"))
        for name, cls in _PARTS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, from_dict(cls, value, name))
        if self.eval_episodes < 1 or self.eval_every < 1 or self.checkpoint_every < 1:
            raise ValueError("eval_episodes, eval_every and checkpoint_every must be >= 1")


_PARTS = {
    "critic": ChunkCriticConfig,
    "best_of_n": BestOfNConfig,
    "expo": ExpoConfig,
    "q_weighted": QWeightedConfig,
    "online": OnlineConfig,
}


def from_dict(cls: type, values: dict[str, Any], where: str = "improver") -> Any:
    """Build a config dataclass, naming unknown fields (a typo fails before any work)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} settings {unknown}; known: {sorted(known)}")
    return cls(**values)
