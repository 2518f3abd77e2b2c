"""Captions for contrastive adaptation, made from success labels and the simulator state.

A :class:`StateWords` rule names a state dimension and cuts it into bins, each with a word,
e.g. for push (``state[4]`` is the box's x)::

    StateWords(index=4, subject="the box is", edges=[-0.05, 0.05],
               words=["on the left", "in the middle", "on the right"])
    -> "the box is not in a goal zone, the box is on the left"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class StateWords:
    """One caption part from one state dimension."""

    index: int
    """state dimension"""
    subject: str
    """text before the word, e.g. 'the box is'"""
    edges: list[float]
    """bin edges, increasing (len(words) - 1 of them)"""
    words: list[str]
    """one word per bin"""

    def __post_init__(self) -> None:
        if len(self.words) != len(self.edges) + 1:
            raise ValueError(
                f"StateWords(index={self.index}): {len(self.words)} words need "
                f"{len(self.words) - 1} edges, got {len(self.edges)}"
            )
        if list(self.edges) != sorted(self.edges):
            raise ValueError(f"StateWords(index={self.index}): edges must increase: {self.edges}")

    def describe(self, states: np.ndarray) -> np.ndarray:
        if self.index >= states.shape[1]:
            raise ValueError(
                f"StateWords index {self.index} is outside the {states.shape[1]}-d state"
            )
        bins = np.digitize(states[:, self.index], self.edges)
        return np.array([f"{self.subject} {self.words[b]}" for b in bins], dtype=object)


def make_captions(
    labels: np.ndarray,
    states: np.ndarray | None,
    success_text: str,
    failure_text: str,
    words: Sequence[StateWords] = (),
) -> np.ndarray:
    """One caption per frame: the success or failure text, then each state rule's words."""
    if not success_text.strip() or not failure_text.strip():
        raise ValueError("success_text and failure_text must be non-empty captions")
    if success_text == failure_text:
        raise ValueError(f"success and failure captions are the same: {success_text!r}")
    captions = np.where(np.asarray(labels, bool), success_text, failure_text).astype(object)
    if words:
        if states is None:
            raise ValueError("state words need the frames' states")
        for rule in words:
            captions = captions + ", " + rule.describe(states)
    return captions.astype(str)
