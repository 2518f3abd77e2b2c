import json

import numpy as np
import pytest
import torch
from reward_helpers import SIZE, StateReward, write_store

from robot_rl.cli import main
from robot_rl.data.store import EpisodeStore
from robot_rl.jobs.reward import RewardJob, relabel_rewards, reward_job
from robot_rl.rewards.checkpoint import load_reward_model, read_meta
from robot_rl.rewards.classifier import ClassifierConfig, ClassifierNet, SuccessClassifier


@pytest.fixture
def store(tmp_path):
    s = write_store(tmp_path / "toy.zarr")
    s.close()
    return tmp_path / "toy.zarr"


@pytest.fixture
def classifier(tmp_path):
    torch.manual_seed(0)
    cfg = ClassifierConfig(
        image_key="image.cam", image_size=SIZE, channels=[8, 8], feature_dim=4, hidden_dim=4
    )
    SuccessClassifier(cfg, ClassifierNet(cfg)).save(tmp_path / "cls")
    return tmp_path / "cls"


def test_relabel_rewards_belong_to_the_frame_reached():
    episode = {"state": np.array([[0.1, 0], [0.2, 0], [0.3, 0]], np.float32)}
    np.testing.assert_allclose(relabel_rewards(StateReward(), episode), [0.2, 0.3, 0.3])


def test_relabel_writes_a_whole_new_store(store, classifier, tmp_path):
    out = tmp_path / "relabelled.zarr"
    result = reward_job(
        ["command=relabel", f"store={store}", f"model={classifier}", f"out={out}", "progress=false"]
    )
    assert result["episodes"] == 12
    source, dest = EpisodeStore.open(store), EpisodeStore.open(out)
    model = load_reward_model(classifier)
    first = dest.get_episode(0)
    np.testing.assert_allclose(first["reward"], relabel_rewards(model, source.get_episode(0)))
    np.testing.assert_array_equal(first["task_reward"], source.get_episode(0)["reward"])
    np.testing.assert_array_equal(dest.episode_success, source.episode_success)
    assert dest.meta["extra"]["relabelled"]["model"] == str(classifier)
    assert not [p for p in tmp_path.iterdir() if ".relabel-" in p.name]  # no temp left
    with pytest.raises(FileExistsError, match="overwrite=true"):
        reward_job(["command=relabel", f"store={store}", f"model={classifier}", f"out={out}"])


def test_eval_reports_auroc_spearman_and_a_png(store, classifier, tmp_path):
    out = tmp_path / "report"
    result = reward_job(
        ["command=eval", f"store={store}", f"models=[{classifier}]", f"out={out}", "progress=false"]
    )
    figures = result["models"]["cls"]
    assert 0.0 <= figures["auroc"] <= 1.0 and -1.0 <= figures["spearman_progress"] <= 1.0
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert json.loads((out / "eval.json").read_text())["models"]["cls"]["frames"] == 96


def test_train_command_writes_a_classifier_with_a_held_out_report(store, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "trained"
    result = reward_job(
        [
            "command=train",
            f"store={store}",
            f"out={out}",
            "progress=false",
            "classifier.image_key=image.cam",
            f"classifier.image_size={SIZE}",
            "classifier.steps=5",
            "classifier.batch_size=8",
            "classifier.channels=[8,8]",
            "classifier.calib_fraction=0.34",
            "test_fraction=0.34",
        ]
    )
    assert {"auroc", "precision", "recall"} <= set(result["held_out"])
    assert read_meta(out)["kind"] == "success_classifier"


def test_cli_names_bad_commands_and_missing_arguments(capsys):
    assert main(["reward", "frobnicate", "store=x.zarr"]) == 2
    assert "use one of" in capsys.readouterr().err
    assert main(["reward", "eval", "store=x.zarr"]) == 2
    assert "models=" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model=DIR"):
        RewardJob(command="relabel", store="x.zarr")


def test_missing_checkpoint_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reward model checkpoint"):
        load_reward_model(tmp_path)
