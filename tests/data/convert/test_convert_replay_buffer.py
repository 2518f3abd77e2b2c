import numpy as np
import pytest
import zarr

from robot_rl.data import EpisodeStore
from robot_rl.data.convert import ConvertError, ConvertOptions, convert
from robot_rl.data.convert.samples import write_replay_buffer_sample


def test_diffusion_policy_buffer_imports_exactly(tmp_path):
    src = tmp_path / "pusht.zarr"
    source = write_replay_buffer_sample(src)
    with pytest.raises(ConvertError, match="fps=<Hz>"):  # the buffer records no rate
        convert(src, tmp_path / "a.zarr", ConvertOptions(progress=False))
    convert(src, tmp_path / "a.zarr", ConvertOptions(fps=10, progress=False))
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert store.meta["extra"]["provenance"]["format"] == "diffusion_policy"
    for i, episode in enumerate(source):
        got = store.get_episode(i)
        assert np.array_equal(got["state"], episode["state"])
        assert np.array_equal(got["action"], episode["action"])
        assert got["image.img"].dtype == np.uint8  # float 0..255 frames become uint8 exactly
        assert np.array_equal(got["image.img"], episode["img"].astype(np.uint8))
        assert np.array_equal(got["keypoint"], episode["keypoint"])


def test_mismatched_lengths_and_broken_ends_are_refused(tmp_path):
    src = tmp_path / "bad.zarr"
    write_replay_buffer_sample(src)
    root = zarr.open_group(str(src), mode="a")
    root["data/state"].resize((14, 5))
    options = ConvertOptions(fps=10, progress=False)
    with pytest.raises(
        ConvertError, match=r"data/state has 14 rows but meta/episode_ends ends at 15"
    ):
        convert(src, tmp_path / "a.zarr", options)
    root["data/state"].resize((15, 5))
    root["meta/episode_ends"][:] = np.array([5, 3, 15])
    with pytest.raises(ConvertError, match="not strictly increasing at episode 1"):
        convert(src, tmp_path / "a.zarr", options)
    assert not (tmp_path / "a.zarr").exists()
