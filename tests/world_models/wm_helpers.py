"""Settings shared by the world-model tests."""

from world_models.state_model import StateModelConfig


def tiny_config(**kw) -> StateModelConfig:
    base = dict(
        ensemble=3,
        hidden_dims=[32, 32],
        head_hidden_dims=[16],
        steps=150,
        head_steps=150,
        batch_size=32,
        unroll=2,
        held_out=0.2,
        lr=3e-3,
    )
    return StateModelConfig(**{**base, **kw})
