"""Reinforcement-learning building blocks shared by the improvers: networks, replay, SAC."""
