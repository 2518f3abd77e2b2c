"""How well a reward tells success apart and follows progress: AUROC, Spearman, precision and
recall at a threshold, and the threshold choice of a success classifier."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = 0.5 * (a + b - 1) + 1.0
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative
    (ties count half), by the Mann-Whitney rank sum."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = _ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); 0 if either is constant."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 and counts of ``scores >= threshold`` against ``labels``."""
    labels = np.asarray(labels, dtype=bool)
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": int((~predicted & ~labels).sum()),
    }


def choose_threshold(scores: np.ndarray, labels: np.ndarray, min_precision: float) -> float:
    """The lowest threshold whose precision on (held-out) frames reaches ``min_precision``,
    i.e. the best recall at that precision; the F1-best threshold when none reaches it.

    A false success rewards the learner for a failure it will then repeat, a missed one only
    delays learning, so precision is the constraint and recall what is maximised."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores, dtype=np.float64)[order], labels[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold sits at the last of tied scores
    precision = tp / (tp + fp)
    recall = tp / max(int(y.sum()), 1)
    ok = last & (precision >= min_precision)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])
    else:
        f1 = np.where(last, 2 * precision * recall / np.maximum(precision + recall, 1e-12), -1)
        i = int(np.argmax(f1))
    return float(s[i])
