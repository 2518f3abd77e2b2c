import json

import numpy as np
import pytest
import torch
from wm_helpers import tiny_config

from robot_rl.data import EpisodeStore, StoreError
from world_models.fidelity import fidelity_report
from world_models.state_model import load_state_model
from world_models.train import check_store, train_state_model


def test_rollouts_store_episodes_with_success_and_failure(toy_store):
    with EpisodeStore.open(toy_store) as store:
        assert store.n_episodes == 36
        success = store.episode_success
        assert (
            success[:12].all() and not success[-8:].any()
        )  # 0.05 per step cannot reach x >= 1 in 12 steps
        ep = store.get_episode(0)
        assert ep["state"].shape == (len(ep["action"]), 2)
        assert ep["terminated"][-1] and ep["is_success"][-1]


def test_checkpoint_round_trip_and_task_recorded(toy_model):
    model, summary, out = toy_model
    header = json.loads((out / "model" / "config.json").read_text())
    assert header["config"]["task"] == "toy" and header["model_class"] == "StateWorldModel"
    assert (out / "model" / "model.safetensors").is_file()
    loaded, _ = load_state_model(out / "model", task="toy")
    s, a = torch.randn(5, 2), torch.rand(5, 1) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.next(s, a), model.next(s, a))
    assert (out / "tb").is_dir() and (out / "train.json").is_file()


def test_model_of_another_task_is_refused(toy_model):
    _, _, out = toy_model
    with pytest.raises(ValueError, match="trained on task 'toy', not 'push'"):
        load_state_model(out / "model", task="push")


def test_store_not_matching_the_config_is_refused(toy_store):
    with EpisodeStore.open(toy_store) as store:
        with pytest.raises(ValueError, match="state_dim is 2, the world model config says 10"):
            check_store(store, tiny_config(state_dim=10))
        with pytest.raises(ValueError, match="holds task 'toy'"):
            check_store(store, tiny_config(task="push"))


def test_store_without_actions_is_refused(tmp_path):
    path = tmp_path / "obs_only.zarr"
    with EpisodeStore.create(path, task="toy", fps=10, source="test", robot="sim") as store:
        for _ in range(2):
            store.append_episode({"state": np.zeros((3, 2), np.float32)})
    with pytest.raises(StoreError, match="has no \\['action', 'is_success'\\]"):
        train_state_model(path, tiny_config(), progress=False)


def test_model_learns_the_dynamics_and_success(toy_model, toy_store, tmp_path):
    model, summary, _ = toy_model
    report = fidelity_report(model, toy_store, summary["held_out_episodes"], tmp_path)
    one, five = report["kstep"]["1"], report["kstep"]["5"]
    # x moves by 0.25 * action: far better than "nothing moves" after training
    assert one["rmse"] < 0.5 * one["copy_rmse"]
    assert five["rmse"] < 0.5 * five["copy_rmse"]
    assert report["success_head"]["recall"] > 0.5
    assert report["success_head"]["balanced_accuracy"] > 0.7
    assert all((tmp_path / name).is_file() for name in ("kstep_error.png", "trajectory.png"))


def test_thresholds_call_as_many_successes_as_held_out_steps_had(toy_model, toy_store):
    from world_models.train import calibrate_thresholds, load_frames

    model, summary, _ = toy_model
    with EpisodeStore.open(toy_store) as store:
        held = load_frames(store).select(np.asarray(summary["held_out_episodes"]))
    calibrate_thresholds(model, held)
    s, a = torch.from_numpy(held.state), torch.from_numpy(held.action)
    with torch.no_grad():
        _, logit, _ = model.outcome(s, a, model.next(s, a).mean(dim=0))
    assert int((logit > model.success_threshold).sum()) == int(held.is_success.sum())
    assert summary["success_threshold"] == pytest.approx(float(model.success_threshold))
