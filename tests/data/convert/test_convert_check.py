import json

import numpy as np

from robot_rl import cli
from robot_rl.data import EpisodeStore
from robot_rl.data.convert import CheckOptions, check_dataset


def test_check_of_a_good_store_summarises_and_plots(store_sample, tmp_path):
    summary = check_dataset(
        store_sample, CheckOptions(out=str(tmp_path / "report"), progress=False)
    )
    assert summary["ok"], summary["errors"]
    assert summary["episodes"] == 3 and summary["frames"] == 15 and summary["fps"] == 10.0
    assert summary["success_rate"] == 2 / 3
    assert summary["schema"]["image.front"] == {"dtype": "uint8", "shape": [6, 5, 3]}
    assert (
        len(summary["keys"]["action"]["mean"]) == 2
        and len(summary["keys"]["image.front"]["max"]) == 3
    )
    assert (tmp_path / "report/distributions.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report/summary.json").read_text())["frames"] == 15


def _store(path, episodes, fps=10.0):
    with EpisodeStore.create(path, task="t", fps=fps, source="s", robot="r") as store:
        for episode in episodes:
            store.append_episode(episode)


def test_check_finds_timestamp_termination_and_action_range_problems(tmp_path):
    def episode(action: float, order: list[int], scale: float, end: int | None) -> dict:
        terminated = np.zeros(4, bool)
        if end is not None:
            terminated[end] = True
        stamps = np.arange(4)[order] / 10.0 * scale
        return {
            "action": np.full((4, 2), action, np.float32),
            "timestamp": stamps,
            "terminated": terminated,
        }

    episodes = [
        episode(0.0, [0, 1, 2, 3], 1.0, None),
        episode(3.0, [0, 2, 1, 3], 1.0, 1),  # out of range, time runs back, terminates early
        episode(0.0, [0, 1, 2, 3], 1.5, None),  # 15 Hz steps in a 10 Hz store
    ]
    _store(tmp_path / "s.zarr", episodes)
    summary = check_dataset(
        tmp_path / "s.zarr", CheckOptions(out=str(tmp_path / "r"), progress=False)
    )
    assert not summary["ok"]
    assert summary["issue_counts"] == {"timestamp": 2, "terminated": 1, "action_range": 1}
    assert any("episode 1" in e and "does not increase at frame 2" in e for e in summary["errors"])
    assert any("episode 2" in e and "expected 1/fps" in e for e in summary["errors"])
    assert any("actions reach 3" in w for w in summary["warnings"])
    assert summary["success_rate"] == 0.0  # a store always records episode_success


def test_cli_dataset_check_fails_on_errors(robomimic_sample, tmp_path, capsys):
    src, _ = robomimic_sample
    assert cli.main(["dataset", "check", str(src), f"out={tmp_path / 'r'}", "progress=false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "robomimic" and summary["episodes"] == 3 and summary["ok"]
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    assert cli.main(["dataset", "check", str(src), f"out={tmp_path / 'r'}", "progress=false"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert "truncated" in summary["errors"][0]
