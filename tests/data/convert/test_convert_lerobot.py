import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robot_rl.data import EpisodeStore
from robot_rl.data.convert import ConvertError, convert
from robot_rl.data.convert.samples import store_differences, write_lerobot_sample

pytest.importorskip("lerobot", reason="LeRobot is installed by scripts/setup.sh")


@pytest.fixture(scope="module")
def lerobot_sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("lerobot") / "sample"
    return path, write_lerobot_sample(path)


def test_lerobot_made_dataset_imports_exactly(lerobot_sample, tmp_path, quiet):
    src, source = lerobot_sample
    convert(src, tmp_path / "a.zarr", quiet)
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert store.meta["fps"] == 30 and store.meta["robot"] == "so100"
    assert store.meta["task"] == "pick up the cube"
    assert store.meta["extra"]["provenance"]["format"] == "lerobot"
    assert list(store.episode_success) == [True, False, True]  # from next.success
    for i, episode in enumerate(source):
        got = store.get_episode(i)
        assert np.array_equal(got["state"], episode["observation.state"])
        assert np.array_equal(
            got["observation.environment_state"], episode["observation.environment_state"]
        )
        assert np.array_equal(got["action"], episode["action"])
        assert np.array_equal(got["image.top"], episode["observation.images.top"])  # PNG: exact
        assert np.array_equal(got["terminated"], episode["next.done"])
        assert np.allclose(got["timestamp"], np.arange(len(got["action"])) / 30)


def test_lerobot_store_lerobot_round_trip_is_exact(lerobot_sample, tmp_path, quiet):
    src, _ = lerobot_sample
    convert(src, tmp_path / "a.zarr", quiet)
    convert(tmp_path / "a.zarr", tmp_path / "export", quiet)
    info = json.loads((tmp_path / "export/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert info["features"]["observation.images.top"]["dtype"] == "image"
    convert(tmp_path / "export", tmp_path / "b.zarr", quiet)
    assert store_differences(tmp_path / "a.zarr", tmp_path / "b.zarr") == []


def test_store_lerobot_store_round_trip_is_exact(store_sample, tmp_path, quiet):
    convert(store_sample, tmp_path / "export", quiet)
    assert not list(tmp_path.glob(".export.writing-*"))  # the temporary folder is gone
    convert(tmp_path / "export", tmp_path / "back.zarr", quiet)
    assert store_differences(store_sample, tmp_path / "back.zarr") == []


def test_missing_parquet_file_names_file_and_episodes(lerobot_sample, tmp_path, quiet):
    import shutil

    src = tmp_path / "copy"
    shutil.copytree(lerobot_sample[0], src)
    (src / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(
        ConvertError, match=r"file-000.parquet: missing; it holds episodes \[0, 1, 2\]"
    ):
        convert(src, tmp_path / "a.zarr", quiet)
    assert not (tmp_path / "a.zarr").exists()


def test_episode_index_gap_is_refused(lerobot_sample, tmp_path, quiet):
    import shutil

    src = tmp_path / "copy"
    shutil.copytree(lerobot_sample[0], src)
    episodes = src / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes)
    pq.write_table(table.filter(np.array(table["episode_index"]) != 1), episodes)
    with pytest.raises(ConvertError, match=r"meta/episodes.*gaps \(missing \[1\]\)"):
        convert(src, tmp_path / "a.zarr", quiet)


def test_nan_action_stops_at_that_episode(tmp_path, quiet):
    src = tmp_path / "nan"
    write_lerobot_sample(src, lengths=(4, 4, 4), image=False, nan_episode=1)
    with pytest.raises(ConvertError, match=r"episode 1.*'action' has NaN"):
        convert(src, tmp_path / "a.zarr", quiet)
    assert EpisodeStore.open(tmp_path / "a.zarr").n_episodes == 1
