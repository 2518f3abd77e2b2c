"""Checkpoint folders: round trips, the golden layout, every broken-checkpoint error, atomicity."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_factories import bc_config, build, diffusion_config, make_batch
from safetensors.torch import load_file, save_file

import robot_rl.policies.checkpoint as checkpoint
from robot_rl.policies import load_policy, save_policy

GOLDEN = Path(__file__).parent / "golden" / "checkpoint_layout.json"
UPDATE_GOLDEN = os.environ.get("ROBOT_RL_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize(
    "config",
    [diffusion_config(), diffusion_config(images=True), bc_config(), bc_config(images=True)],
    ids=["diffusion", "diffusion+image", "bc", "bc+image"],
)
def test_round_trip_gives_identical_chunks(tmp_path: Path, config) -> None:  # noqa: ANN001
    policy = build(config)
    with torch.no_grad():  # move off the seeded init so that loading really has to load
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    obs = make_batch(config, 2, np.random.default_rng(0))["obs"]
    noise = np.random.default_rng(1).standard_normal((2, config.horizon, config.action_dim))
    args = (obs, noise.astype(np.float32)) if hasattr(policy, "noise_shape") else (obs,)
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    np.testing.assert_array_equal(loaded.predict_chunk(*args), policy.predict_chunk(*args))


def _layout(folder: Path) -> dict:
    header = json.loads((folder / "config.json").read_text())
    return {
        "files": sorted(p.name for p in folder.iterdir()),
        "config.json": {
            "format_version": header["format_version"],
            "policy_class": header["policy_class"],
            "config": header["config"],
        },
        "model.safetensors": {
            k: "x".join(map(str, v.shape))
            for k, v in load_file(folder / "model.safetensors").items()
        },
        "normalizer.safetensors": sorted(load_file(folder / "normalizer.safetensors")),
    }


def test_golden_checkpoint_layout(tmp_path: Path) -> None:
    """A change here is a checkpoint format change: old folders may no longer load. If it is
    intended, bump FORMAT_VERSION when old checkpoints break, then regenerate the golden file
    with ROBOT_RL_UPDATE_GOLDEN=1 pytest tests/policies/test_policy_checkpoint.py."""
    layouts = {}
    for name, config in [
        ("DiffusionPolicy", diffusion_config()),
        ("GaussianBCPolicy", bc_config()),
    ]:
        layouts[name] = _layout(save_policy(build(config), tmp_path / name))
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(layouts, indent=1, sort_keys=True) + "\n")
    assert layouts == json.loads(GOLDEN.read_text()), __doc__


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_policy(build(diffusion_config()), tmp_path / "ckpt")


def _edit_config(folder: Path, edit) -> None:  # noqa: ANN001
    header = json.loads((folder / "config.json").read_text())
    edit(header)
    (folder / "config.json").write_text(json.dumps(header))


def test_missing_folder_and_files_are_named(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*save_policy"):
        load_policy(tmp_path / "nowhere")
    for name in ["model.safetensors", "normalizer.safetensors", "config.json"]:
        (saved / name).rename(saved / (name + ".bak"))
        with pytest.raises(FileNotFoundError, match=f"{name} is missing"):
            load_policy(saved)
        (saved / (name + ".bak")).rename(saved / name)
    load_policy(saved)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            lambda h: h.update(policy_class="FlowPolicy"),
            KeyError,
            "unknown policy class 'FlowPolicy'",
        ),
        (
            lambda h: h["config"].update(n_heads=4),
            ValueError,
            r"unknown DiffusionPolicyConfig fields \['n_heads'\]",
        ),
        (lambda h: h["config"].pop("action_dim"), ValueError, r"\['action_dim'\] are required"),
        (lambda h: h["config"].update(horizon=7), ValueError, "horizon=7 must be divisible"),
        (lambda h: h.update(format_version=99), ValueError, "format_version 99"),
        (lambda h: h.pop("config"), ValueError, "exactly the keys"),
    ],
    ids=["class", "unknown-field", "missing-field", "bad-value", "version", "layout"],
)
def test_bad_config_json_is_named(saved: Path, edit, error, message: str) -> None:  # noqa: ANN001
    _edit_config(saved, edit)
    with pytest.raises(error, match=f"config.json.*{message}|{message}") as info:
        load_policy(saved)
    assert "config.json" in str(info.value)


def test_invalid_json_is_named(saved: Path) -> None:
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_policy(saved)


def test_mismatched_weights_name_the_tensors(saved: Path) -> None:
    weights = load_file(saved / "model.safetensors")
    renamed = dict(weights)
    renamed["unet.final.1.kernel"] = renamed.pop("unet.final.1.weight")
    save_file(renamed, saved / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"model.safetensors.*missing tensors \['unet.final.1.weight'\]"
        r".*unexpected tensors \['unet.final.1.kernel'\]",
    ):
        load_policy(saved)
    reshaped = dict(weights)
    reshaped["unet.final.1.bias"] = torch.zeros(7)
    save_file(reshaped, saved / "model.safetensors")
    with pytest.raises(ValueError, match=r"unet.final.1.bias: file \(7,\) vs config \(3,\)"):
        load_policy(saved)
    (saved / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="model.safetensors is unreadable"):
        load_policy(saved)


def test_normalizer_missing_keys_is_named(saved: Path) -> None:
    tensors = load_file(saved / "normalizer.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("state.")},
        saved / "normalizer.safetensors",
    )
    with pytest.raises(KeyError, match=r"normalizer.safetensors.*lacks statistics for \['state'\]"):
        load_policy(saved)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", refuse)
    load_policy(saved)


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = build(diffusion_config())
    target = tmp_path / "ckpt"
    save_policy(policy, target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_policy(policy, target)

    def crash(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_policy(policy, tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        save_policy(policy, target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half folder, no leftovers
    monkeypatch.undo()
    load_policy(target)  # the old checkpoint survived the failed overwrite
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    save_policy(policy, target, overwrite=True)
    assert torch.equal(next(load_policy(target).parameters()), next(policy.parameters()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_load_policy_puts_the_policy_on_the_requested_device(saved: Path) -> None:
    loaded = load_policy(saved, device="cpu")
    assert loaded.config.device == "cpu" and not loaded.training
    assert next(loaded.parameters()).device == torch.device("cpu")


def test_weights_get_the_same_permissions_as_the_config(saved: Path) -> None:
    mode = (saved / "config.json").stat().st_mode
    for name in ["model.safetensors", "normalizer.safetensors"]:
        assert (saved / name).stat().st_mode == mode  # safetensors alone would write 0600
