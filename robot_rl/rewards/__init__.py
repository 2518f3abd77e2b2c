"""Reward models learned or borrowed instead of written by hand: a success classifier on
camera frames (``classifier``), VLM-RM with open_clip (``clip``), contrastive domain adaptation
of open_clip to the robot's camera (``adapt``), and how a reward scores a store's episodes
(``report``). Each is a :class:`robot_rl.core.reward.RewardModel`, saved as a checkpoint folder
and loaded with :func:`load_reward_model`; ``robot_rl.core.reward.VectorRewardWrapper`` puts
one into any vector of (chunk) environments. open_clip is imported only by the CLIP parts.
"""

from robot_rl.rewards.checkpoint import load_reward_model
from robot_rl.rewards.classifier import ClassifierConfig, SuccessClassifier, train_classifier
from robot_rl.rewards.frames import LabelledFrames, load_labelled_frames

__all__ = [
    "ClassifierConfig",
    "LabelledFrames",
    "SuccessClassifier",
    "load_labelled_frames",
    "load_reward_model",
    "train_classifier",
]
