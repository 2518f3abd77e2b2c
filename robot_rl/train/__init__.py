"""Training loops for policies: behaviour-cloning pretraining with a weight EMA."""

from robot_rl.train.pretrain import EMA, pretrain, warmup_cosine

__all__ = ["EMA", "pretrain", "warmup_cosine"]
