import json

import numpy as np
import pytest
import torch

from robot_rl.data import EpisodeStore
from world_models.image_model import (
    ImageModelConfig,
    load_frame_data,
    load_image_model,
    train_image_model,
)
from world_models.image_report import image_fidelity

SIZE = 16


def _moving_square_store(path) -> str:
    """A 3x3 square moved by the actions across a 16x16 frame; success on the right edge."""
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, task="toy", fps=10, source="test", robot="sim") as store:
        for _ in range(6):
            pos, frames, actions, success = np.array([8.0, 8.0]), [], [], []
            for _ in range(20):
                frame = np.zeros((SIZE, SIZE, 3), np.uint8)
                x, y = np.clip(pos.round().astype(int), 1, SIZE - 2)
                frame[y - 1 : y + 2, x - 1 : x + 2] = 255
                action = rng.uniform(-1, 1, 2).astype(np.float32)
                frames.append(frame)
                actions.append(action)
                pos = np.clip(pos + action, 1, SIZE - 2)
                success.append(bool(pos[0] > 12))
            store.append_episode(
                {
                    "image.top": np.stack(frames),
                    "action": np.stack(actions),
                    "is_success": np.array(success),
                }
            )
    return str(path)


def _tiny(**kw):
    base = dict(
        image_size=SIZE,
        chunk=2,
        block_out_channels=[8, 16],
        classifier_channels=[8],
        num_train_timesteps=10,
        num_inference_steps=2,
        steps=3,
        batch_size=4,
        held_out=0.34,
    )
    return ImageModelConfig(**{**base, **kw})


def test_trains_saves_and_reports(tmp_path):
    torch.set_num_threads(1)
    store = _moving_square_store(tmp_path / "frames.zarr")
    model, summary = train_image_model(store, _tiny(), tmp_path / "run", progress=False)
    assert summary["steps"] == 3 and np.isfinite(summary["final_losses"]["frame"])
    header = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert header["model_class"] == "ImageWorldModel" and header["config"]["task"] == "toy"
    loaded, _ = load_image_model(tmp_path / "run" / "model", task="toy")
    ctx = torch.zeros(1, 6, SIZE, SIZE)
    chunk = torch.zeros(1, 2, 2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(model.imagine(ctx, chunk, g1), loaded.imagine(ctx, chunk, g2))
    data = load_frame_data(store, model.cfg)
    report = image_fidelity(model, data, np.asarray(summary["held_out_episodes"]), tmp_path, 2)
    assert set(report["kstep_mse"]) == {"2", "4"}
    assert all(0.0 <= v <= 1.0 for v in report["kstep_mse"].values())
    assert (tmp_path / "real_vs_imagined.mp4").stat().st_size > 0
    assert (tmp_path / "kstep_error.png").is_file()
    with pytest.raises(ValueError, match="trained on task 'toy', not 'push'"):
        load_image_model(tmp_path / "run" / "model", task="push")


def test_frames_of_another_size_are_refused(tmp_path):
    store = _moving_square_store(tmp_path / "frames.zarr")
    with pytest.raises(ValueError, match="frames are \\(16, 16, 3\\).*says \\(32, 32, 3\\)"):
        load_frame_data(store, _tiny(image_size=32))
