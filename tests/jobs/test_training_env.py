from toys import ConstantPolicy, toy_task_config

from robot_rl import config
from robot_rl.jobs.improve import training_env


def test_training_env_is_built_from_the_env_group_with_the_acting_policy():
    job = config.load_job("improve", config.ImproveJob, [])
    task, policy = toy_task_config(), ConstantPolicy(1.0)
    assert job.env is None and training_env(job, task, policy, 0.99) is None
    job.env = {"_target_": "builtins.dict", "horizon": 6}  # records what the factory receives
    job.world_model = {"path": "models/wm"}
    built = training_env(job, task, policy, 0.9)
    assert built["task"]["name"] == "toy" and built["policy"] is policy
    assert built["world_model"] == {"path": "models/wm"} and built["gamma"] == 0.9
    assert built["horizon"] == 6
