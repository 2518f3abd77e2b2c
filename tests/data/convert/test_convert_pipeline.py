import json

import numpy as np
import pytest

from robot_rl import cli
from robot_rl.data import EpisodeStore
from robot_rl.data.convert import ConvertError, ConvertOptions, KeyMap, convert
from robot_rl.data.convert.formats import destination_format, detect_format
from robot_rl.data.convert.keymap import SourceKey, camera_name, resolve
from robot_rl.data.convert.samples import store_differences, write_robomimic_sample
from robot_rl.data.convert.store_io import StoreWriter


def test_formats_are_inferred_from_paths(store_sample, robomimic_sample, tmp_path):
    assert detect_format(store_sample) == "store"
    assert detect_format(robomimic_sample[0]) == "robomimic"
    assert destination_format(tmp_path / "x.zarr", "auto", "robomimic") == "store"
    assert destination_format(tmp_path / "x.hdf5", "auto", "store") == "robomimic"
    assert destination_format(tmp_path / "folder", "auto", "store") == "lerobot"
    with pytest.raises(ConvertError, match="to_format"):
        destination_format(tmp_path / "folder", "auto", "robomimic")


def test_default_key_maps_per_format():
    specs = {
        "observation.state": SourceKey("float32", (6,)),
        "observation.images.wrist": SourceKey("uint8", (8, 8, 3), image=True),
        "action": SourceKey("float32", (3,)),
        "next.done": SourceKey("bool", ()),
        "frame_index": SourceKey("int64", ()),
    }
    resolved = resolve(KeyMap(), specs, "lerobot", "x")
    assert resolved.state == (("observation.state", 6),)
    assert dict(resolved.fields) == {
        "action": "action",
        "image.wrist": "observation.images.wrist",
        "terminated": "next.done",
    }  # frame_index is LeRobot bookkeeping, not data
    assert camera_name("agentview_image") == "agentview" and camera_name("obs/eye_image") == "eye"
    with pytest.raises(ConvertError, match="no action key"):
        resolve(KeyMap(), {"x": SourceKey("float32", (2,))}, "diffusion_policy", "x")


def test_provenance_records_format_path_and_checksum(robomimic_sample, tmp_path):
    src, _ = robomimic_sample
    report = convert(src, tmp_path / "a.zarr", ConvertOptions(progress=False))
    provenance = EpisodeStore.open(tmp_path / "a.zarr").meta["extra"]["provenance"]
    assert provenance["format"] == "robomimic" and provenance["path"] == str(src.resolve())
    assert provenance["sha256"] == report["sha256"] and provenance["bytes"] == src.stat().st_size
    assert provenance["keys"]["fields"]["action"] == "actions"


def test_interrupted_conversion_resumes_after_the_last_complete_episode(
    robomimic_sample, tmp_path, monkeypatch
):
    src, _ = robomimic_sample
    dst, options = tmp_path / "a.zarr", ConvertOptions(progress=False)
    original = StoreWriter.append

    def crash_at_third(self, episode, success):
        if self._store.n_episodes == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C while episode 2 is being written
        original(self, episode, success)

    monkeypatch.setattr(StoreWriter, "append", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        convert(src, dst, options)
    assert EpisodeStore.open(dst).n_episodes == 2
    monkeypatch.setattr(StoreWriter, "append", original)
    report = convert(src, dst, options)
    assert report["resumed_from_episode"] == 2 and report["converted_frames"] == 7
    convert(src, tmp_path / "whole.zarr", options)
    assert store_differences(dst, tmp_path / "whole.zarr") == []
    assert convert(src, dst, options)["converted_frames"] == 0  # complete: nothing to do


def test_resume_refuses_a_changed_source_or_key_map(robomimic_sample, tmp_path):
    src, _ = robomimic_sample
    dst = tmp_path / "a.zarr"
    convert(src, dst, ConvertOptions(max_episodes=1, progress=False))
    with pytest.raises(ConvertError, match="key mapping"):
        convert(src, dst, ConvertOptions(keys=KeyMap(state=["object"]), progress=False))
    write_robomimic_sample(src, seed=1)  # the source changed since
    with pytest.raises(ConvertError, match="source files.*overwrite=true"):
        convert(src, dst, ConvertOptions(progress=False))
    convert(src, dst, ConvertOptions(overwrite=True, progress=False))
    assert EpisodeStore.open(dst).n_episodes == 3


def test_cli_convert_takes_src_and_dst_by_position(robomimic_sample, tmp_path, capsys):
    src, source = robomimic_sample
    dst = tmp_path / "odd, name.zarr"  # quoted for Hydra
    assert cli.main(["convert", str(src), str(dst), "progress=false", "max_episodes=2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and report["to_format"] == "store"
    assert np.array_equal(
        EpisodeStore.open(dst).read("action", [1]), source[1]["actions"].astype(np.float32)
    )
    assert cli.main(["convert", str(src)]) == 2
    assert "robot-rl convert SRC DST" in capsys.readouterr().err
    assert cli.main(["convert", str(tmp_path / "none.hdf5"), str(dst)]) == 2
    assert "no such file" in capsys.readouterr().err
