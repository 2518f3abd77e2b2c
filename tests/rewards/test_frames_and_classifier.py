import numpy as np
import pytest
import torch
from reward_helpers import SIZE, frame_of, write_store

from robot_rl.rewards.checkpoint import load_reward_model
from robot_rl.rewards.classifier import (
    ClassifierConfig,
    SuccessClassifier,
    platt_scaling,
    random_shift,
    train_classifier,
)
from robot_rl.rewards.frames import check_images, load_labelled_frames


@pytest.fixture
def store(tmp_path):
    s = write_store(tmp_path / "toy.zarr")
    s.close()
    return tmp_path / "toy.zarr"


def test_step_labels_are_the_previous_steps_success(store):
    frames = load_labelled_frames(store, "image.cam", with_state=True)
    x = frames.states[:, 0]
    # frame t shows success iff the step that reached it did: x >= 0.5 on the frame itself
    assert np.array_equal(frames.labels, x >= 0.5)
    assert frames.progress[0] == 0.0 and frames.progress[7] == 1.0
    assert frames.episode_success.sum() == 6 * 8


def test_episode_end_labels_mark_the_last_frames_of_successes(store):
    frames = load_labelled_frames(store, "image.cam", label="episode_end", positive_frames=2)
    assert frames.labels.sum() == 6 * 2
    assert frames.labels[6] and frames.labels[7] and not frames.labels[5]


def test_frames_errors_name_the_fix(store, tmp_path):
    with pytest.raises(KeyError, match="cameras=\\[front\\]"):
        load_labelled_frames(store, "image.front")
    with pytest.raises(ValueError, match="terminate_on_success=false"):
        load_labelled_frames(store, "image.cam", label="step", episodes=[1, 3])
    with pytest.raises(TypeError, match="uint8"):
        check_images(np.zeros((2, SIZE, SIZE, 3), np.float32), "image.cam", SIZE)
    with pytest.raises(ValueError, match="image_size=16"):
        check_images(np.zeros((2, 8, 8, 3), np.uint8), "image.cam", SIZE)
    with pytest.raises(ValueError, match="RGB"):
        check_images(np.zeros((2, SIZE, SIZE), np.uint8), "image.cam", SIZE)


def test_random_shift_keeps_shape_and_moves_content():
    rng = np.random.default_rng(0)
    images = np.stack([frame_of(0.0)] * 6)
    shifted = random_shift(images, 2, rng)
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    assert not all(np.array_equal(s, images[0]) for s in shifted)
    assert random_shift(images, 0, rng) is images


def test_platt_scaling_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 2000)
    labels = rng.random(2000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    a, b = platt_scaling(z, labels)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)


def tiny_cfg(**kw):
    return ClassifierConfig(
        image_key="image.cam",
        image_size=SIZE,
        channels=[8, 8],
        feature_dim=8,
        hidden_dim=8,
        steps=30,
        batch_size=16,
        shift=1,
        calib_fraction=0.34,
        **kw,
    )


def test_classifier_trains_calibrates_saves_and_reloads(store, tmp_path):
    torch.set_num_threads(1)
    frames = load_labelled_frames(store, "image.cam", with_state=True)
    model = train_classifier(frames, tiny_cfg(with_state=True), progress=False)
    report = model.report
    assert report["train_frames"] + report["calib_frames"] == len(frames)
    assert 0.0 <= model.threshold <= 1.0 and model.a > 0
    obs = {"image.cam": frames.images, "state": frames.states}
    p = model(obs)
    assert p.shape == (len(frames),) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    model.save(tmp_path / "cls")
    again = load_reward_model(tmp_path / "cls")
    assert isinstance(again, SuccessClassifier)
    np.testing.assert_allclose(again(obs), p, rtol=1e-6)
    sparse = SuccessClassifier.load(tmp_path / "cls", reward="sparse")
    assert set(np.unique(sparse(obs))) <= {0.0, 1.0}
    history = {k: np.stack([v, v], 1) for k, v in obs.items()}  # [B, To, ...]: latest frame
    np.testing.assert_allclose(again(history), p, rtol=1e-6)
    with pytest.raises(KeyError, match="state"):
        again({"image.cam": frames.images})


def test_classifier_refuses_one_class_data(store):
    frames = load_labelled_frames(store, "image.cam")
    only_failures = frames.subset(~frames.episode_success)
    only_failures.labels[:] = False
    only_failures.labels[0] = True  # one positive episode -> calibration or training lacks it
    with pytest.raises(ValueError, match="one class"):
        train_classifier(only_failures, tiny_cfg(), progress=False)
