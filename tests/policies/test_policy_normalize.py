"""Normalizer: limits / gaussian maps, constant dimensions, images, errors, serialisation."""

import numpy as np
import pytest
import torch

from robot_rl.policies import Normalizer

STATS = {
    "state": {
        "min": np.array([-2.0, 0.0, 3.0], np.float32),
        "max": np.array([2.0, 10.0, 3.0], np.float32),  # last dimension is constant
        "mean": np.array([0.0, 5.0, 3.0], np.float32),
        "std": np.array([1.0, 2.0, 0.0], np.float32),
    },
    "action": {"min": -np.ones(2, np.float32), "max": np.ones(2, np.float32)},
}


def test_limits_maps_min_max_to_minus_one_one_and_round_trips() -> None:
    norm = Normalizer.from_stats(STATS, {"state": "limits", "action": "limits"})
    x = torch.tensor([[-2.0, 0.0, 3.0], [2.0, 10.0, 3.0], [0.0, 5.0, 3.0]])
    out = norm.normalize({"state": x})["state"]
    expected = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.unnormalize({"state": out})["state"], x)


def test_constant_dimension_maps_to_zero_without_nan() -> None:
    norm = Normalizer.from_stats(STATS, {"state": "gaussian"})
    x = torch.tensor([[1.0, 7.0, 3.0], [1.0, 7.0, 99.0]])  # even off-constant values stay finite
    out = norm.normalize({"state": x})["state"]
    assert torch.isfinite(out).all()
    assert out[:, 2].abs().max() == 0.0
    back = norm.unnormalize({"state": out})["state"]
    torch.testing.assert_close(back[0], x[0])
    assert back[1, 2] == 3.0  # the constant comes back


def test_gaussian_round_trip_on_numpy_input() -> None:
    norm = Normalizer.from_stats(STATS, {"state": "gaussian"})
    x = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    x[..., 2] = 3.0
    out = norm.normalize({"state": x})["state"]
    torch.testing.assert_close(out[..., 1], (torch.from_numpy(x[..., 1]) - 5.0) / 2.0)
    torch.testing.assert_close(norm.unnormalize({"state": out})["state"], torch.from_numpy(x))


def test_images_become_unit_floats_without_statistics() -> None:
    norm = Normalizer.from_stats(STATS, {"action": "limits"})
    image = np.array([[[[0, 255, 51]]]], np.uint8)
    out = norm.normalize({"image.front": image})["image.front"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 1.0, 0.2]]]]))


def test_missing_statistics_raise_key_error_naming_key() -> None:
    with pytest.raises(KeyError, match="'gripper'.*stats\\['gripper'\\]"):
        Normalizer.from_stats(STATS, {"gripper": "limits"})
    with pytest.raises(KeyError, match=r"lack \['mean', 'std'\]"):
        Normalizer.from_stats({"action": STATS["action"]}, {"action": "gaussian"})
    norm = Normalizer.from_stats(STATS, {"action": "limits"})
    with pytest.raises(KeyError, match="no statistics for 'state'"):
        norm.normalize({"state": np.zeros(3, np.float32)})  # never silently passed through
    with pytest.raises(KeyError, match="'state'"):
        norm.unnormalize({"state": np.zeros(3, np.float32)})


def test_bad_statistics_and_modes_raise() -> None:
    with pytest.raises(ValueError, match="mode 'minmax'"):
        Normalizer.from_stats(STATS, {"state": "minmax"})
    bad = {"action": {"min": np.ones(2), "max": -np.ones(2)}}
    with pytest.raises(ValueError, match="max < min"):
        Normalizer.from_stats(bad, {"action": "limits"})
    nan = {"action": {"min": np.array([np.nan, 0.0]), "max": np.ones(2)}}
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.from_stats(nan, {"action": "limits"})


def test_state_dict_round_trip_keeps_maps_and_modes() -> None:
    norm = Normalizer.from_stats(STATS, {"state": "gaussian", "action": "limits"})
    tensors = norm.state_dict()
    assert sorted(tensors) == ["action.center", "action.scale", "state.center", "state.scale"]
    again = Normalizer.from_state_dict(tensors, norm.metadata())
    assert again.modes == {"state": "gaussian", "action": "limits"}
    x = {"state": torch.randn(6, 3), "action": torch.rand(6, 2) * 2 - 1}
    for key, value in norm.normalize(x).items():
        torch.testing.assert_close(again.normalize(x)[key], value)
    with pytest.raises(ValueError, match="center or a scale but not both"):
        Normalizer.from_state_dict({"state.center": tensors["state.center"]})
