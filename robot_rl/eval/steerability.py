"""How far can steering a base policy's latent noise go on a task, and how hard is it to learn?

DSRL and best-of-N pick, in every state, among the behaviours a frozen base can produce from
its noise. Before spending compute on them it pays to measure three things on the base itself,
with nothing learned:

* **Coverage.** ``K`` noise vectors drawn like the base's, each held fixed for every chunk of an
  episode, are run from the same ``S`` start states. The success matrix ``[S, K]`` tells how
  good one fixed noise is (the best column), and how many start states some noise wins (the
  share of rows with a success): what a perfect noise selector could reach.
* **Learnability.** A selector that reads only the first observation and picks one of the
  ``K`` noises, fitted on the outcomes of the first starts and scored on the rest, for growing
  numbers of fitted starts: how close to the coverage a learner gets, and at what cost in
  labelled episodes (each fitted start costs ``K``). A learner that has to explore to get its
  labels sees far fewer.
* **Roughness.** For some starts and the best few noises, copies of each start with its joints
  moved by a few millimetres and hundredths of a radian (MuJoCo tasks:
  ``reset(options={"start_perturbation": ...})``): how often the outcome stays the same. Where
  a small move flips success, no smooth selector can pick the winning noise everywhere.

``python -m robot_rl.bench steerability`` runs the three and draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.core.task import TaskConfig
from robot_rl.eval.rollout import make_policy_env, run_to_end, stack_observations


@dataclass
class FixedNoiseOutcomes:
    """Outcomes of ``K`` fixed noises from ``S`` start states."""

    success: np.ndarray
    """bool ``[S, K]``: start ``s`` won with noise ``k`` held for every chunk"""
    states: np.ndarray
    """float32 ``[S, D]``: each start's first observation, flattened as a noise actor reads it"""

    @property
    def coverage(self) -> float:
        """Share of the starts that some noise wins: a perfect selector's success."""
        return float(self.success.any(axis=1).mean())

    def greedy_cover(self, n: int) -> list[float]:
        """Coverage of the best 1, 2, ..., ``n`` noises, added greedily (each adds the most
        starts not yet won)."""
        won = np.zeros(len(self.success), dtype=bool)
        curve = []
        for _ in range(min(n, self.success.shape[1])):
            gains = (self.success & ~won[:, None]).sum(axis=0)
            won |= self.success[:, int(gains.argmax())]
            curve.append(float(won.mean()))
        return curve


def run_fixed_noises(
    policy: SteerableChunkPolicy,
    task: TaskConfig,
    noises: np.ndarray,
    resets: list[dict],
) -> tuple[np.ndarray, np.ndarray]:
    """Runs episode ``i`` from ``env.reset(**resets[i])`` with ``noises[i]`` held for every
    chunk, all episodes batched through the policy. Returns success ``bool [N]`` and the first
    flat observations ``[N, D]``."""
    if len(noises) != len(resets):
        raise ValueError(f"{len(noises)} noises for {len(resets)} episodes: give one each")
    envs = [make_policy_env(task, policy) for _ in resets]
    try:
        obs = [env.reset(**kwargs)[0] for env, kwargs in zip(envs, resets, strict=True)]
        first = stack_observations(obs)[keys.STATE].reshape(len(obs), -1).astype(np.float32)
        success = np.zeros(len(envs), dtype=bool)
        policy.reset()
        run_to_end(
            envs,
            obs,
            list(range(len(envs))),
            lambda batch, live: policy.predict_chunk(batch, noises[live])[
                :, : policy.n_action_steps
            ],
            success,
        )
    finally:
        for env in envs:
            env.close()
    return success, first


def fixed_noise_outcomes(
    policy: SteerableChunkPolicy,
    task: TaskConfig,
    noises: np.ndarray,
    starts: int,
    seed: int,
    progress: bool = True,
) -> FixedNoiseOutcomes:
    """Every noise of ``noises [K, *noise_shape]`` from each of ``starts`` start states (the
    resets of seeds ``seed``, ``seed + 1``, ...)."""
    if starts < 1 or len(noises) < 1:
        raise ValueError(f"need at least one start and one noise, got {starts} and {len(noises)}")
    success, states = [], []
    for s in tqdm(range(starts), desc="fixed noises", disable=not progress, leave=False):
        won, first = run_fixed_noises(policy, task, noises, [{"seed": seed + s}] * len(noises))
        success.append(won)
        states.append(first[0])
    return FixedNoiseOutcomes(np.stack(success), np.stack(states).astype(np.float32))


def selector_success(
    outcomes: FixedNoiseOutcomes,
    train_starts: list[int],
    test_starts: int,
    steps: int = 3000,
    hidden: int = 256,
    seed: int = 0,
) -> list[dict]:
    """For each ``n`` in ``train_starts``: an MLP fitted on the first ``n`` starts (every
    noise's outcome from each, as independent logistic outputs) picks, for each of the last
    ``test_starts`` starts, the noise it rates most likely to win; reports the share of those
    picks that won. Fitted with full-batch Adam, so the result depends only on ``seed``."""
    total = len(outcomes.success)
    if test_starts < 1 or max(train_starts) + test_starts > total:
        raise ValueError(
            f"{max(train_starts)} fitted + {test_starts} held-out starts need {total} or fewer; "
            f"the outcomes hold {total}: run more starts or fit on fewer"
        )
    x = outcomes.states
    spread = x[: max(train_starts)].std(axis=0)
    used = spread > 1e-6  # constant inputs at reset (velocities) carry nothing
    x = (x[:, used] - x[: max(train_starts), used].mean(axis=0)) / spread[used]
    x_test = torch.from_numpy(x[-test_starts:])
    y_test = outcomes.success[-test_starts:]
    results = []
    for n in train_starts:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, outcomes.success.shape[1]),
        )
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
        inputs = torch.from_numpy(x[:n])
        labels = torch.from_numpy(outcomes.success[:n].astype(np.float32))
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            pick = net(x_test).argmax(dim=1).numpy()
        results.append(
            {
                "train_starts": n,
                "labelled_episodes": n * outcomes.success.shape[1],
                "success": float(y_test[np.arange(test_starts), pick].mean()),
            }
        )
    return results


def perturbation_agreement(
    policy: SteerableChunkPolicy,
    task: TaskConfig,
    noises: np.ndarray,
    starts: int,
    seed: int,
    slide: float,
    hinge: float,
    copies: int = 7,
    progress: bool = True,
) -> dict:
    """For each start and each noise of ``noises``: the unperturbed episode and ``copies``
    whose start has every slide joint moved by up to ``slide`` m and every hinge by up to
    ``hinge`` rad. Reports the share of perturbed episodes whose outcome matches the
    unperturbed one, overall and split by that outcome."""
    agree = {True: [], False: []}
    for s in tqdm(range(starts), desc="perturbed starts", disable=not progress, leave=False):
        for k, noise in enumerate(noises):
            resets = [{"seed": seed + s}] + [
                {
                    "seed": seed + s,
                    "options": {
                        "start_perturbation": {
                            "slide": slide,
                            "hinge": hinge,
                            "seed": (seed + s) * 10_007 + k * 101 + c,
                        }
                    },
                }
                for c in range(copies)
            ]
            won, first = run_fixed_noises(
                policy, task, np.repeat(noise[None], 1 + copies, 0), resets
            )
            if copies and np.array_equal(first[1:], np.broadcast_to(first[0], first[1:].shape)):
                raise ValueError(
                    f"task {task.name!r} ignores reset(options={{'start_perturbation': ...}}): "
                    "its starts did not move, so agreement would be 1 by construction. Our "
                    "MuJoCo tasks take the option; for others skip this check "
                    "(perturb_starts=0 in the steerability bench)"
                )
            agree[bool(won[0])].extend((won[1:] == won[0]).tolist())
    every = agree[True] + agree[False]
    return {
        "slide_m": slide,
        "hinge_rad": hinge,
        "episodes": len(every),
        "agreement": float(np.mean(every)),
        "agreement_where_won": float(np.mean(agree[True])) if agree[True] else None,
        "agreement_where_lost": float(np.mean(agree[False])) if agree[False] else None,
    }
