import itertools

import numpy as np
import pytest

from robot_rl.rewards.metrics import auroc, choose_threshold, precision_recall, spearman


def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    return sum(pairs) / len(pairs)


def test_auroc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)
    labels = rng.random(40) < 0.4
    assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    assert auroc([0.1, 0.2, 0.9], [False, False, True]) == 1.0
    assert auroc([0.9, 0.2, 0.1], [False, False, True]) == 0.0


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc([0.1, 0.2], [True, True])


def test_spearman_is_rank_correlation():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert spearman(x, np.ones(10)) == 0.0


def test_precision_recall_counts():
    r = precision_recall(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool), 0.5)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 1, 1)
    assert r["precision"] == 0.5 and r["recall"] == 0.5


def test_threshold_keeps_precision_and_maximises_recall():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    t = choose_threshold(scores, labels, min_precision=1.0)
    assert t == 0.8  # 3 of 4 positives with no false positive
    t = choose_threshold(scores, labels, min_precision=0.75)
    assert t == 0.6  # 4 positives, 1 false: precision 0.8
    assert precision_recall(scores, labels, t)["recall"] == 1.0
