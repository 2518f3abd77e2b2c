"""Does a DSRL critic rank latent noises the way the task does? A probe by branching.

A steered policy runs ``episodes`` episodes. At every noise choice of each episode, the
simulator is copied ``candidates`` times; copy ``j`` executes the base's chunk for
candidate noise ``w_j`` (``w_0`` is the actor's own choice, the others drawn as ``sample``
says) and then continues with the steered policy to the episode's end. Each candidate thus
gets a true outcome (success or not; the simulator is deterministic) and the critic's
``Q(s, w_j)``, and the probe reports, separately for the episodes the policy failed and won,
how often a different noise would have won, and how well Q separates the winning candidates
from the losing ones (AUC 0.5: no better than chance). Per choice index (the first noise
choice of an episode, the second, ...) it reports where a failed episode could still have been
won. Drawn with ``sample="local"``, the candidates are the actor's choice moved by Gaussian
steps of ``local_scale`` (in units of the noise bound): in the won episodes their success is
how far a winning noise's neighbours also win, i.e. how smooth the landscape the critic must
learn is at that scale.

Needs an environment that survives ``copy.deepcopy`` with its state (MuJoCo tasks do).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.task import TaskConfig
from robot_rl.eval.rollout import make_policy_env, run_to_end
from robot_rl.improvers.dsrl import DSRL
from robot_rl.improvers.steered import actor_input

SAMPLES = ("gaussian", "actor", "local")


@dataclass
class ProbeResult:
    """What the probe found over the noise choices of one group of episodes (those the steered
    policy failed, or those it won)."""

    episodes: int
    """episodes in the group"""
    probed_choices: int
    """noise choices probed: every choice of every episode in the group"""
    choices_with_a_winner: float
    """share of probed choices where some other candidate noise went on to succeed"""
    candidate_success: float
    """mean share of the other candidates that went on to succeed"""
    critic_auc: float | None
    """P(Q of a winning candidate > Q of a losing one), averaged over choices with both; None
    when no choice had both"""
    critic_pick_success: float | None
    """share of probed choices where the candidate of highest Q went on to succeed"""
    q_chosen: float | None
    """mean Q of the actor's own choice (None when nothing was probed)"""
    q_candidates: float | None
    """mean Q of the other candidates"""
    by_choice: list[dict]
    """per choice index (0: an episode's first noise choice): ``choices``,
    ``choices_with_a_winner`` and ``candidate_success`` over the choices at that index"""

    def summary(self) -> dict:
        return asdict(self)


def probe_noise_critic(
    learner: DSRL,
    task: TaskConfig,
    episodes: int = 40,
    candidates: int = 16,
    sample: str = "gaussian",
    seed: int = 20_000,
    progress: bool = True,
    local_scale: float = 0.1,
) -> dict[str, ProbeResult]:
    """Probe ``learner``'s noise critic on ``task`` (see the module docstring); results for
    the episodes the steered policy ``"failed"`` and those it ``"succeeded"`` in. Failed
    episodes alone would flatter no critic: in them its top choice lost by definition.
    ``sample``: 'gaussian' draws the other candidates as the base does (N(0, I) within the
    bound), 'actor' from the actor's own exploration distribution around its choice, 'local'
    the actor's choice plus N(0, ``local_scale``^2) steps (in units of the bound)."""
    if sample not in SAMPLES:
        raise ValueError(f"sample must be one of {SAMPLES}, got {sample!r}")
    if sample == "local" and not local_scale > 0:
        raise ValueError(f"local_scale must be > 0, got {local_scale}")
    if episodes < 1 or candidates < 2:
        raise ValueError(f"need episodes >= 1 and candidates >= 2, got {episodes}, {candidates}")
    policy = learner.policy
    was_deterministic, policy.deterministic = policy.deterministic, True
    rng = np.random.default_rng(seed)
    groups: dict[str, list] = {"failed": [], "succeeded": []}
    counts = {"failed": 0, "succeeded": 0}
    try:
        for episode in tqdm(range(episodes), desc="probe", disable=not progress):
            snapshots, success = _run(policy, task, seed + episode)
            group = "succeeded" if success else "failed"
            counts[group] += 1
            groups[group].extend(
                (index, *_probe_choice(learner, env, obs, candidates, sample, rng, local_scale))
                for index, (env, obs) in enumerate(snapshots)
            )
    finally:
        policy.deterministic = was_deterministic
    return {name: _summarise(counts[name], rows) for name, rows in groups.items()}


def _summarise(episodes: int, rows: list) -> ProbeResult:
    if not rows:
        return ProbeResult(episodes, 0, 0.0, 0.0, None, None, None, None, [])
    index = np.array([r[0] for r in rows])  # which choice of its episode
    wins = np.stack([r[1] for r in rows])  # [choices, candidates]
    q = np.stack([r[2] for r in rows])
    aucs = [_auc(qi[wi], qi[~wi]) for wi, qi in zip(wins, q, strict=True) if 0 < wi.sum() < len(wi)]
    return ProbeResult(
        episodes=episodes,
        probed_choices=len(rows),
        choices_with_a_winner=float(wins[:, 1:].any(axis=1).mean()),
        candidate_success=float(wins[:, 1:].mean()),
        critic_auc=float(np.mean(aucs)) if aucs else None,
        critic_pick_success=float(wins[np.arange(len(q)), q.argmax(axis=1)].mean()),
        q_chosen=float(q[:, 0].mean()),
        q_candidates=float(q[:, 1:].mean()),
        by_choice=[
            {
                "choice": int(i),
                "choices": int((index == i).sum()),
                "choices_with_a_winner": float(wins[index == i, 1:].any(axis=1).mean()),
                "candidate_success": float(wins[index == i, 1:].mean()),
            }
            for i in np.unique(index)
        ],
    )


def _run(policy, task: TaskConfig, seed: int):
    """One episode of the steered policy; a copy of the environment at every noise choice."""
    env = make_policy_env(task, policy)
    obs, _ = env.reset(seed=seed)
    snapshots, done, success = [], False, False
    while not done:
        snapshots.append((copy.deepcopy(env), obs))
        chunk = policy.predict_chunk(_batch(obs))[0, : policy.n_action_steps]
        obs, _, terminated, truncated, info = env.step(chunk)
        success |= bool(info[keys.IS_SUCCESS])
        done = terminated or truncated
    env.close()
    return snapshots, success


def _probe_choice(
    learner: DSRL, env, obs, n: int, sample: str, rng: np.random.Generator, local_scale: float
):
    """Outcomes ``[n]`` and critic values ``[n]`` of ``n`` noises at one choice; row 0 is the
    actor's own choice."""
    policy, bound = learner.policy, learner.cfg.noise_bound
    state = actor_input(_batch(obs), learner.reads_clock)
    chosen = policy.base_noise(_batch(obs)).reshape(1, -1) / bound
    if sample == "actor":
        others = (
            np.concatenate(
                [
                    policy.base_noise(_batch(obs), rng.standard_normal(learner.noise_dim))
                    for _ in range(n - 1)
                ]
            ).reshape(n - 1, -1)
            / bound
        )
    elif sample == "local":
        others = chosen + local_scale * rng.standard_normal((n - 1, learner.noise_dim))
    else:
        others = rng.standard_normal((n - 1, learner.noise_dim)) / bound
    noise = np.clip(np.concatenate([chosen, others]), -0.999, 0.999).astype(np.float32)
    states = np.repeat(state, n, axis=0)
    chunks = learner.base_chunk(states, noise)
    with torch.no_grad():
        device = learner.cfg.sac.device
        q = learner.sac.critic(
            torch.from_numpy(states).to(device), torch.from_numpy(noise).to(device)
        )
        q = q.min(dim=0).values.cpu().numpy()
    copies = [copy.deepcopy(env) for _ in range(n)]
    wins = np.zeros(n, bool)
    live_obs: list = [None] * n
    live = []
    for j, sim in enumerate(copies):
        live_obs[j], _, terminated, truncated, info = sim.step(chunks[j])
        wins[j] = bool(info[keys.IS_SUCCESS])
        if not (terminated or truncated):
            live.append(j)
    # the rest of each branch with the steered policy, batched across branches
    run_to_end(
        copies,
        live_obs,
        live,
        lambda batch, _: policy.predict_chunk(batch)[:, : policy.n_action_steps],
        wins,
    )
    for sim in copies:
        sim.close()
    return wins, q


def _batch(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[None] for k, v in obs.items()}


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())
