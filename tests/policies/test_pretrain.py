"""pretrain(): the loss goes down on a fixed batch, history, EMA, validation, TensorBoard."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_factories import bc_config, build, diffusion_config, make_batch

from robot_rl.train import EMA, pretrain, warmup_cosine


def _fixed_batch_fn(config):  # noqa: ANN001, ANN202 - test helper
    batch = make_batch(config, 16, np.random.default_rng(0))
    return lambda batch_size, rng: batch


def _loss(policy, batch) -> float:  # noqa: ANN001 - same diffusion noise and steps every call
    with torch.no_grad():
        return policy.compute_loss(batch, generator=torch.Generator().manual_seed(0)).item()


@pytest.mark.parametrize(
    ("config", "steps"),
    [(diffusion_config(), 80), (bc_config(), 25)],
    ids=["diffusion", "gaussian_bc"],
)
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(config, steps: int) -> None:  # noqa: ANN001
    policy = build(config)
    sample = _fixed_batch_fn(config)
    batch = sample(16, None)
    before = _loss(policy, batch)
    history = pretrain(
        policy,
        sample,
        steps=steps,
        batch_size=16,
        lr=3e-3,
        ema=False,
        warmup_steps=1,
        progress=False,
        seed=0,
    )
    after = _loss(policy, batch)
    assert after < 0.7 * before, (before, after)
    assert len(history["losses"]) == steps and history["steps"] == list(range(steps))
    assert history["wall_s"] > 0 and not policy.training


def test_pretraining_is_deterministic_given_the_seed() -> None:
    config = diffusion_config()
    runs = []
    for _ in range(2):
        policy = build(config)
        runs.append(
            pretrain(
                policy, _fixed_batch_fn(config), steps=5, batch_size=16, progress=False, seed=3
            )["losses"]
        )
    assert runs[0] == runs[1]


def test_ema_is_validated_and_kept(tmp_path: Path) -> None:
    config = diffusion_config()
    policy = build(config)
    seen = []

    def val_fn(p) -> dict[str, float]:  # noqa: ANN001
        assert not p.training
        seen.append([q.detach().clone() for q in p.parameters()])
        return {"loss": _loss(p, _fixed_batch_fn(config)(16, None))}

    history = pretrain(
        policy,
        _fixed_batch_fn(config),
        steps=6,
        batch_size=16,
        progress=False,
        val_fn=val_fn,
        val_every=3,
        log_dir=tmp_path / "tb",
    )
    assert history["ema"] is True  # the diffusion policy asks for it
    assert [step for step, _ in history["val"]] == [2, 5]
    # the policy ends with the averaged weights that the last validation saw
    for validated, final in zip(seen[-1], policy.parameters(), strict=True):
        torch.testing.assert_close(validated, final.detach())
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_non_finite_loss_stops_with_a_hint() -> None:
    config = bc_config()
    policy = build(config)
    batch = make_batch(config, 4, np.random.default_rng(0))
    batch["obs"]["state"][0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="at step 0"):
        pretrain(policy, lambda b, rng: batch, steps=2, batch_size=4, progress=False)


def test_warmup_cosine_schedule() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert all(not math.isnan(warmup_cosine(s, 5, 1)) for s in range(6))


def test_ema_warms_up_and_averages() -> None:
    layer = torch.nn.Linear(2, 1)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update(layer)  # first decay is 1/10: the average moves 90% of the way
    with ema.averaged(layer):
        assert layer.weight.abs().min() > 0.0
    torch.testing.assert_close(layer.weight, torch.ones(1, 2))  # restored
    with pytest.raises(ValueError, match="decay"):
        EMA(layer, decay=1.0)
