"""A small store of the toy task (a point pushed along a line) for world-model tests: rollouts
of a policy that succeeds and one that mostly fails, so success and failure both appear."""

import numpy as np
import pytest
from toys import ConstantPolicy, ToySteerable, toy_task_config
from wm_helpers import tiny_config

from robot_rl.data import EpisodeStore
from world_models.rollouts import collect_policy_episodes
from world_models.train import train_state_model


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("wm") / "toy.zarr"
    store = EpisodeStore.create(path, task="toy", fps=10, source="test", robot="sim")
    task = toy_task_config()
    with store:
        collect_policy_episodes(ConstantPolicy(1.0), task, store, 12, n_envs=4, progress=False)
        collect_policy_episodes(ToySteerable(), task, store, 16, n_envs=4, progress=False)
        collect_policy_episodes(ConstantPolicy(0.2), task, store, 8, n_envs=4, progress=False)
    return str(path)


@pytest.fixture(scope="session")
def toy_model(toy_store, tmp_path_factory):
    """(model, training summary, run folder) of a tiny model trained on the toy store."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("wm_run")
    model, summary = train_state_model(toy_store, tiny_config(), out, progress=False)
    return model, summary, out


def toy_states(n: int = 4) -> np.ndarray:
    return np.zeros((n, 2), np.float32)
