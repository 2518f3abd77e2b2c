import numpy as np
import pytest
from toys import tiny_diffusion

from robot_rl import config
from robot_rl.distributed.ray_runner import (
    EpisodeAssembler,
    RayRunnerConfig,
    kill_worker_after,
    train_dsrl_ray,
)
from robot_rl.distributed.shipping import checkpoint_files, policy_from_files
from robot_rl.improvers.collectors import Transitions
from robot_rl.improvers.dsrl import DSRLConfig
from robot_rl.jobs.improve import improve_job
from robot_rl.policies import save_policy
from robot_rl.rl.sac import SACConfig


def _rows(env_id, done, tag):
    n = len(env_id)
    return Transitions(
        state=np.full((n, 2), tag, np.float32),
        action=np.zeros((n, 1), np.float32),
        reward=np.arange(n, dtype=np.float32) + tag,
        next_state=np.zeros((n, 2), np.float32),
        discount=np.ones(n, np.float32),
        steps=np.full(n, 4),
        done=np.asarray(done, bool),
        success=np.asarray(done, bool),
        env_id=np.asarray(env_id),
        timeout=np.zeros(n, bool),
    )


def test_assembler_releases_whole_episodes_and_drops_a_dead_workers_partial_ones():
    assembler = EpisodeAssembler()
    # worker 0, envs 0 and 1, two vector steps per batch: env 1 ends its episode at step 2
    assert assembler.add(0, _rows([0, 1, 0, 1], [0, 0, 0, 1], tag=0)) != []
    first = assembler.add(0, _rows([0, 1, 0, 1], [1, 0, 0, 0], tag=10))
    assert [len(e) for e in first] == [3]  # env 0: two chunks held back, then its last one
    np.testing.assert_array_equal(first[0].reward, [0, 2, 10])  # in their original order
    assert assembler.completed == 2 and assembler.successes == 2
    assembler.add(1, _rows([0], [0], tag=20))
    assert assembler.drop(0) == 3  # env 0 holds 1 row, env 1 holds 2
    assert assembler.drop(1) == 1 and assembler.dropped == 4
    assert assembler.add(0, _rows([0], [1], tag=30))[0].reward.tolist() == [30]


def test_runner_settings_are_checked():
    with pytest.raises(ValueError, match="workers"):
        RayRunnerConfig(workers=0)
    with pytest.raises(ValueError, match="envs_per_worker"):
        RayRunnerConfig(envs_per_worker=0)


def test_improve_job_rejects_bad_runner_settings(tmp_path):
    job = config.load_job(
        "improve", config.ImproveJob, ["runner=ray", "+runner.speed=9", f"out={tmp_path}"]
    )
    job.base = str(_tiny_push_base(tmp_path / "base"))
    with pytest.raises(ValueError, match=r"unknown runner settings \['speed'\]"):
        improve_job(job)


def _tiny_push_base(path):
    return save_policy(tiny_diffusion(10, 2, horizon=8, n_action_steps=8), path)


def test_checkpoint_files_rebuild_the_same_policy(tmp_path):
    base = _tiny_push_base(tmp_path / "base")
    copy = policy_from_files(checkpoint_files(base))
    obs = {"state": np.zeros((2, 2, 10), np.float32)}
    noise = np.random.default_rng(0).standard_normal((2, *copy.noise_shape)).astype(np.float32)
    from robot_rl.policies import load_policy

    np.testing.assert_array_equal(
        copy.predict_chunk(obs, noise), load_policy(base).predict_chunk(obs, noise)
    )


def test_dsrl_on_ray_survives_a_killed_worker(tmp_path):
    pytest.importorskip("ray")
    task = config.load_job("improve", config.ImproveJob, []).task.build()
    base = _tiny_push_base(tmp_path / "base")
    cfg = DSRLConfig(
        env_steps=1000,
        warmup_env_steps=100,
        n_envs=2,
        eval_every=1000,
        eval_episodes=2,
        sac=SACConfig(hidden_dims=(16, 16), batch_size=16, utd_ratio=1),
    )
    runner = RayRunnerConfig(workers=2, num_cpus=3, vector_steps_per_call=1)
    drills = []
    run = train_dsrl_ray(
        base,
        task,
        cfg,
        obs_dim=20,
        runner=runner,
        out=tmp_path / "run",
        progress=False,
        base_success=0.0,
        on_start=lambda learner: drills.append(kill_worker_after(learner, 100)),
    )
    assert run.learner_crashes == 0
    assert run.collector["worker_restarts"] == 1  # the killed worker came back, counted once
    assert run.history.env_steps[-1] >= 1000 and len(run.history.success) == 1
    assert run.history.updates > 0 and (tmp_path / "run" / "checkpoint").exists()
    assert run.collector["episodes"] >= 4  # 50-step episodes, whole ones only
    assert set(run.weights) and all(np.isfinite(w).all() for w in run.weights.values())


def test_queued_calls_keep_each_workers_episodes_in_order(tmp_path):
    ray = pytest.importorskip("ray")
    from robot_rl.distributed.ray_runner import RayCollector, init_ray
    from robot_rl.improvers.dsrl import DSRL

    task = config.load_job("improve", config.ImproveJob, []).task.build()
    base = _tiny_push_base(tmp_path / "base")
    cfg = DSRLConfig(n_envs=2, sac=SACConfig(hidden_dims=(16, 16), batch_size=16))
    runner = RayRunnerConfig(workers=2, num_cpus=3, calls_in_flight=3)
    started = init_ray(runner)
    try:
        learner = DSRL(policy_from_files(checkpoint_files(base)), 20, cfg)
        collector = RayCollector(task, checkpoint_files(base), cfg, 20, runner)
        episodes = []
        # steady weights: 3 calls queued per worker (until both have started and delivered)
        while collector.episodes.completed < 6 or not all(collector.timings):
            batch = collector.collect(learner, warmup=True)
            assert sorted(collector._inflight.values()) == [0, 0, 0, 1, 1, 1]
            episodes.append(batch)
        # the learner updates between calls: the queues drain to one call with the newest
        # weights per worker and never fill up again (however the workers' speeds interleave)
        queued = [3, 3]
        for _ in range(200):
            learner.sac.updates += 1
            episodes.append(collector.collect(learner, warmup=False))
            now = [list(collector._inflight.values()).count(w) for w in (0, 1)]
            assert all(n <= max(q, 1) for n, q in zip(now, queued, strict=True))
            queued = now
            if max(queued) <= 1:
                break
        assert max(queued) <= 1
        collector.close()
    finally:
        if started:
            ray.shutdown()
    for batch in episodes:
        for env_id in np.unique(batch.env_id):  # an id's rows are its whole episodes, in order
            rows = batch.rows(batch.env_id == env_id)
            assert rows.done[-1]
            starts = np.flatnonzero(np.r_[True, rows.done[:-1]])
            chained = np.ones(len(rows) - 1, bool)
            chained[starts[1:] - 1] = False  # a new episode does not continue the last one
            np.testing.assert_array_equal(rows.next_state[:-1][chained], rows.state[1:][chained])
