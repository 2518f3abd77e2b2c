import importlib.util

import numpy as np
import pytest
import torch
from reward_helpers import SIZE, frame_of, write_store

if importlib.util.find_spec("open_clip") is None:  # importing it needs the torchvision fix
    pytest.skip("open_clip is not installed (the clip extra)", allow_module_level=True)

from robot_rl.rewards.adapt import AdaptConfig, adapt_clip  # noqa: E402
from robot_rl.rewards.checkpoint import load_reward_model  # noqa: E402
from robot_rl.rewards.clip import ClipConfig, ClipReward  # noqa: E402

MICRO = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return ClipReward(ClipConfig(model_cfg=MICRO, image_key="image.cam", frame_size=SIZE))


def frames(n=4):
    return np.stack([frame_of(x) for x in np.linspace(-1, 1, n)])


def test_reward_is_the_vlm_rm_formula(micro):
    x = micro.embed_images(frames())
    g = micro.embed_text(micro.cfg.goal_prompts).mean(0)
    b = micro.embed_text(micro.cfg.baseline_prompts).mean(0)
    d = (g - b) / (g - b).norm()
    for alpha in (0.0, 0.5, 1.0):
        micro.set_prompts(micro.cfg.goal_prompts, micro.cfg.baseline_prompts, alpha)
        proj = alpha * torch.outer(d, d) + (1 - alpha) * torch.eye(len(d))
        expected = 1 - 0.5 * (((x - g) @ proj) ** 2).sum(-1)
        np.testing.assert_allclose(micro({"image.cam": frames()}), expected.numpy(), rtol=1e-5)
    # alpha = 0: 1 - |x - g|^2 / 2; alpha = 1: only the goal-baseline direction counts
    micro.set_prompts(micro.cfg.goal_prompts, micro.cfg.baseline_prompts, 1.0)
    along = ((x - g) @ d) ** 2
    np.testing.assert_allclose(micro({"image.cam": frames()}), (1 - 0.5 * along).numpy(), rtol=1e-5)


def test_bad_inputs_are_named(micro):
    with pytest.raises(TypeError, match="uint8"):
        micro({"image.cam": frames().astype(np.float32)})
    with pytest.raises(ValueError, match="image_size=16"):
        micro({"image.cam": np.zeros((2, 24, 24, 3), np.uint8)})
    with pytest.raises(ValueError, match="goal_prompts must be a non-empty list"):
        micro.set_prompts([], ["a table"], 1.0)
    with pytest.raises(ValueError, match="baseline_prompts"):
        micro.set_prompts(["a box"], [" "], 1.0)
    with pytest.raises(ValueError, match="embed identically"):
        micro.set_prompts(["a box in a zone"], ["a box in a zone"], 1.0)
    with pytest.raises(ValueError, match="alpha"):
        ClipConfig(alpha=1.5)


def test_missing_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained=/path/to/open_clip_pytorch_model"):
        ClipReward(ClipConfig(model="ViT-B-32", pretrained="openai"))
    with pytest.raises(FileNotFoundError, match="neither a file nor a known tag"):
        ClipReward(ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "none.bin")))
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        ClipReward(ClipConfig(model=f"local-dir:{tmp_path}"))


def test_checkpoint_of_another_architecture_is_refused(micro, tmp_path):
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "other"
    folder.mkdir()
    other = {**MICRO, "embed_dim": 24}  # same towers, another projection width
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": other}))
    weights = {k: v.contiguous() for k, v in micro.model.state_dict().items()}
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(ValueError, match="is not a 'local-dir:.*' model"):
        ClipReward(ClipConfig(model=f"local-dir:{folder}"))


def test_save_and_load_with_new_prompts(micro, tmp_path):
    micro.save(tmp_path / "clip")
    again = load_reward_model(tmp_path / "clip")
    obs = {"image.cam": frames()}
    np.testing.assert_allclose(again(obs), micro(obs), rtol=1e-5)
    other = ClipReward.load(tmp_path / "clip", goal_prompts=["a bright marker"], alpha=0.0)
    assert other.cfg.alpha == 0.0 and other(obs).shape == (4,)


def test_adaptation_uses_open_clips_loss_and_saves_a_reward(tmp_path):
    torch.set_num_threads(1)
    store = write_store(tmp_path / "toy.zarr")
    store.close()
    cfg = AdaptConfig(
        image_key="image.cam",
        model_cfg=MICRO,
        steps=4,
        batch_size=8,
        shift=1,
        state_words=[
            {"index": 0, "subject": "the dot is", "edges": [0.0], "words": ["left", "right"]}
        ],
        goal_prompts=["the box is in a goal zone"],
    )
    reward, report = adapt_clip(tmp_path / "toy.zarr", cfg, tmp_path / "adapted", progress=False)
    assert np.isfinite(report["final_loss"]) and report["n_captions"] == 3
    assert "the box is in a goal zone, the dot is right" in report["captions"]
    again = load_reward_model(tmp_path / "adapted")
    obs = {"image.cam": frames()}
    np.testing.assert_allclose(again(obs), reward(obs), rtol=1e-5)
