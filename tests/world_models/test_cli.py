import pytest

from robot_rl import config
from world_models.__main__ import load_settings, main


def test_settings_come_from_the_config_files_and_overrides():
    task, settings = load_settings(["task=push", "steps=10", "world_model=state"])
    assert task.name == "push" and settings["steps"] == 10
    assert settings["path"] == "runs/push_world_model/model"
    _, image = load_settings(["world_model=image", "image_size=64"])
    assert image["kind"] == "image" and image["image_size"] == 64


def test_unknown_world_model_names_what_exists(capsys):
    with pytest.raises(
        ValueError, match="unknown world_model 'latent'.*known: \\['image', 'state'\\]"
    ):
        load_settings(["world_model=latent"])
    assert main(["train", "world_model=latent"]) == 2
    assert "known" in capsys.readouterr().err


def test_improve_composes_the_imagination_env():
    job = config.load_job(
        "improve",
        config.ImproveJob,
        ["env=imagination", "world_model=state", "world_model.path=somewhere", "env.horizon=16"],
    )
    assert job.env["_target_"] == "world_models.imagination.ImaginationEnvFactory"
    assert job.env["horizon"] == 16 and job.world_model["path"] == "somewhere"
    plain = config.load_job("improve", config.ImproveJob, [])
    assert plain.env is None and plain.world_model is None
