"""``robot-rl serve``: the job config, the CLI's ``policy=PATH``, and the daemon it builds."""

import pytest

from real.serve import build
from robot_rl import cli, config
from robot_rl.jobs.serve import serve_overrides


def test_serve_config_composes_for_every_robot():
    for robot in ("sim_push", "sim_lift", "so101", "koch"):
        job = config.load_job("serve", config.ServeJob, [f"robot={robot}"])
        assert job.robot["name"] == robot and job.host == "127.0.0.1"
        assert job.store == f"datasets/{robot}_robot.zarr"


def test_policy_path_on_the_command_line_is_the_checkpoint_not_a_config_group():
    overrides = serve_overrides(["robot=sim_push", "policy=runs/push_dsrl/policy"])
    job = config.load_job("serve", config.ServeJob, overrides)
    assert job.policy_path == "runs/push_dsrl/policy"


def test_bad_serve_settings_fail_before_anything_moves(capsys):
    assert cli.main(["serve", "rate_hz=200"]) == 2
    assert "rate_hz" in capsys.readouterr().err
    job = config.load_job("serve", config.ServeJob, ["host=0.0.0.0", "port=0"])
    with pytest.raises(ValueError, match="token"):
        build(job, driver=object())


def test_build_wires_driver_safety_and_api_from_the_robot_config(tmp_path):
    job = config.load_job("serve", config.ServeJob, ["port=0", f"store={tmp_path / 's.zarr'}"])
    daemon, server = build(job)
    try:
        assert daemon.safety.config.action_dim == 2 and daemon.period == pytest.approx(1 / 30)
        assert type(daemon.safety._driver).__name__ == "MujocoDriver"
        assert server.host == "127.0.0.1" and server.token is None
    finally:
        server.close()
        daemon.worker.close()
