import json

import h5py
import numpy as np
import pytest

from robot_rl.data import EpisodeStore
from robot_rl.data.convert import ConvertError, ConvertOptions, KeyMap, convert
from robot_rl.data.convert.samples import store_differences, write_robomimic_sample


def test_h5py_made_file_imports_with_robomimic_defaults(robomimic_sample, tmp_path, quiet):
    src, source = robomimic_sample
    report = convert(src, tmp_path / "a.zarr", quiet)
    assert report["episodes"] == 3 and report["frames"] == 15
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert (
        store.meta["fps"] == 20 and store.meta["task"] == "Lift" and store.meta["robot"] == "Panda"
    )
    assert set(store.keys) == {
        "state",
        "action",
        "reward",
        "terminated",
        "image.agentview",
        "sim_state",
    }
    for i, demo in enumerate(source):
        episode = store.get_episode(i)
        # state = the low-dim obs keys in sorted order, cast to float32 exactly
        parts = [demo[f"obs/{k}"] for k in ("object", "robot0_eef_pos", "robot0_gripper_qpos")]
        assert np.array_equal(episode["state"], np.concatenate(parts, 1).astype(np.float32))
        assert np.array_equal(episode["action"], demo["actions"].astype(np.float32))
        assert np.array_equal(episode["image.agentview"], demo["obs/agentview_image"])
        assert np.array_equal(episode["sim_state"], demo["states"])  # float64 kept as is
        assert np.array_equal(episode["terminated"], demo["dones"] != 0)
    provenance = store.meta["extra"]["provenance"]
    assert provenance["format"] == "robomimic" and len(provenance["sha256"]) == 64
    assert provenance["attrs"]["env_args"]["env_name"] == "Lift"


def test_store_hdf5_store_round_trip_is_exact(store_sample, tmp_path, quiet):
    convert(store_sample, tmp_path / "out.hdf5", quiet)
    with h5py.File(tmp_path / "out.hdf5") as f:  # robomimic's layout
        demo = f["data/demo_0"]
        assert demo.attrs["num_samples"] == 5 and demo["actions"].shape == (5, 2)
        assert demo["obs/state"].shape == (5, 4) and demo["obs/front_image"].dtype == np.uint8
        assert demo["next_obs/state"].shape == (5, 4) and demo["dones"].dtype == np.int64
        assert f["data"].attrs["total"] == 15
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "push"
    convert(tmp_path / "out.hdf5", tmp_path / "back.zarr", quiet)
    assert store_differences(store_sample, tmp_path / "back.zarr") == []


def test_robomimic_export_splits_the_state_back_into_obs_keys(robomimic_sample, tmp_path, quiet):
    src, source = robomimic_sample
    convert(src, tmp_path / "a.zarr", quiet)
    convert(tmp_path / "a.zarr", tmp_path / "b.hdf5", quiet)
    with h5py.File(tmp_path / "b.hdf5") as f:
        assert json.loads(f["data"].attrs["env_args"])["env_kwargs"]["control_freq"] == 20
        for key in ("robot0_eef_pos", "object", "agentview_image"):
            exported = f[f"data/demo_2/obs/{key}"][()]
            assert np.array_equal(exported, source[2][f"obs/{key}"].astype(exported.dtype))
    convert(tmp_path / "b.hdf5", tmp_path / "c.zarr", quiet)
    assert store_differences(tmp_path / "a.zarr", tmp_path / "c.zarr") == []


def test_filter_key_and_explicit_key_map(robomimic_sample, tmp_path):
    src, source = robomimic_sample
    keys = KeyMap(state=["robot0_eef_pos"], cameras={}, keep_unmapped=False, action_norm="minmax")
    convert(src, tmp_path / "a.zarr", ConvertOptions(keys=keys, filter_key="train", progress=False))
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert store.n_episodes == 2  # mask/train lists demo_0 and demo_1
    assert set(store.keys) == {"state", "action", "reward", "terminated", "sim_state"}
    assert store.schema["state"].shape == (3,)
    action = store.read("action")
    assert action.min() == -1.0 and action.max() == 1.0  # rescaled per dimension
    assert "action_bounds" in store.meta["extra"]["provenance"]
    with pytest.raises(ConvertError, match="mask/nosuch.*train"):
        convert(src, tmp_path / "b.zarr", ConvertOptions(filter_key="nosuch", progress=False))
    with pytest.raises(ConvertError, match="'nope'.*source keys"):
        convert(
            src, tmp_path / "b.zarr", ConvertOptions(keys=KeyMap(state=["nope"]), progress=False)
        )


def test_truncated_file_names_the_file(robomimic_sample, tmp_path, quiet):
    src, _ = robomimic_sample
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConvertError, match=rf"{src.name}.*truncated"):
        convert(src, tmp_path / "a.zarr", quiet)
    assert not (tmp_path / "a.zarr").exists()  # nothing converted, nothing left


@pytest.mark.parametrize(
    "corrupt, message",
    [
        ({"nan_demo": 2}, r"data/demo_2.*'action' has NaN"),
        ({"short_obs_demo": 2}, r"data/demo_2.*obs/object"),
    ],
)
def test_bad_demo_stops_before_it_and_resumes_nothing_partial(tmp_path, quiet, corrupt, message):
    src = tmp_path / "bad.hdf5"
    source = write_robomimic_sample(src, lengths=(5, 3, 7, 4), **corrupt)
    with pytest.raises(ConvertError, match=message):
        convert(src, tmp_path / "a.zarr", quiet)
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert store.n_episodes == 2 and store.n_frames == 8  # the good demos before it, whole
    for key in store.keys:  # no rows of the rejected demo were written
        assert store._arrays[key].shape[0] == 8
    assert np.array_equal(store.read("action", [1]), source[1]["actions"].astype(np.float32))
