import numpy as np
import pytest
from toys import ConstantPolicy

from robot_rl.eval.media import plot_success, record_video
from robot_rl.eval.rollout import _quotas, evaluate
from robot_rl.eval.stats import mean_interval, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    for n in range(1, 40):
        for k in (0, n):  # the interval always contains the observed rate
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_mean_interval_uses_student_t():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-3)


def test_quotas_sum_to_episodes():
    for episodes, n in [(100, 16), (7, 3), (16, 16), (5, 1)]:
        q = _quotas(episodes, n)
        assert q.sum() == episodes and q.max() - q.min() <= 1


def test_evaluate_counts_successes_and_lengths(toy_task):
    good = evaluate(ConstantPolicy(1.0), toy_task, episodes=10, n_envs=4, progress=False)
    assert good.episodes == 10 and good.success_rate == 1.0
    assert all(4 <= n <= 6 for n in good.lengths)  # from |x0|<=0.2, 0.25 per step to reach 1
    bad = evaluate(ConstantPolicy(-1.0), toy_task, episodes=6, n_envs=4, progress=False)
    assert bad.success_rate == 0.0 and all(n == 12 for n in bad.lengths)  # time limit
    assert bad.success_ci95[1] < 0.5


def test_evaluate_is_deterministic_given_seed(toy_task):
    a = evaluate(ConstantPolicy(0.3), toy_task, episodes=8, n_envs=3, seed=5, progress=False)
    b = evaluate(ConstantPolicy(0.3), toy_task, episodes=8, n_envs=3, seed=5, progress=False)
    assert a.returns == b.returns and a.lengths == b.lengths


def test_media_files_are_written(toy_task, tmp_path):
    png = plot_success({"a": (0.5, 0.4, 0.6), "b": (0.9, 0.8, 0.95)}, tmp_path / "s.png", "t")
    assert png.stat().st_size > 1000
    mp4 = record_video(ConstantPolicy(1.0), toy_task, tmp_path / "v.mp4", episodes=1)
    assert mp4.stat().st_size > 100
