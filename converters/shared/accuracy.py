"""Accuracy on labelled data, streamed: top-1/top-5 tallies, the paired int8 drop and its 95 % interval.

For whom: the eval steps (``converters.tf2.evaluate`` in tf2, ``legacy_tf1.evaluate`` in the origin TF 1.x)
and the unit tests. Python 3.7 compatible, numpy only. Everything is counted batch by batch (``Tally``,
``PairedTally``): memory does not grow with the number of samples, except for the per-sample top-1
predictions a caller may keep (one int32 each) to pair environments.

The int8 drop is a difference of two proportions measured on the SAME samples (float top-1 minus int8
top-1), so its interval must be a paired one: an unpaired interval ignores that both models mostly get
the same samples right and is several times too wide. ``paired_difference_interval`` is Newcombe's
hybrid score interval for the difference of paired proportions (Newcombe 1998, "Improved confidence
intervals for the difference between binomial proportions based on paired data", Statistics in
Medicine 17: 2635-2650, method 10). Why this one:

- it needs only the 2x2 table (both right, float only, int8 only, both wrong), so it is computed from
  streamed counts with no per-sample data and no resampling;
- it is deterministic (no seed, unlike a bootstrap) and closed-form;
- it keeps close to its nominal 95 % coverage when the drop is near 0 and discordant pairs are few,
  exactly the int8 case, where the Wald interval collapses to zero width (Newcombe's comparison of ten
  methods; method 10 is among those he recommends).

Units: accuracies and the drop are in percent / percentage points.
"""

import math

import numpy as np

Z95 = 1.959963984540054  # the two-sided 95 % normal quantile
TOP_K = 5
LOSING_CLASSES = 5  # how many of the classes that lose most are listed


def wilson_interval(successes, n, z=Z95):
    """The Wilson score interval (lo, hi) of a proportion ``successes / n`` (fractions, not percent)."""
    if n <= 0:
        return (0.0, 1.0)
    p = float(successes) / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference_interval(both, first_only, second_only, neither, z=Z95):
    """Newcombe's (1998, method 10) 95 % interval (lo, hi) of p1 - p2 for paired proportions (fractions).

    ``both``: samples both models get right; ``first_only``: only the first (float) gets right;
    ``second_only``: only the second (int8); ``neither``. p1 = (both + first_only) / n, p2 = (both +
    second_only) / n. See the module docstring for why this interval.
    """
    a, b, c, d = (float(both), float(first_only), float(second_only), float(neither))
    n = a + b + c + d
    if n <= 0:
        return (-1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    product = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(product) if product > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    difference = p1 - p2
    return (max(-1.0, difference - delta), min(1.0, difference + epsilon))


def top_k(scores, k):
    """Indices of the ``k`` highest scores per row (B, k), best first."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _percent(count, n):
    return 100.0 * count / n if n else None


def check_scores(scores, classes, where):
    """``scores`` as a (B, classes) float array, or ValueError saying what does not fit."""
    scores = np.asarray(scores)
    scores = scores.reshape(scores.shape[0], -1) if scores.ndim > 2 else scores
    if scores.ndim != 2 or scores.shape[1] != classes:
        raise ValueError("%s gives scores of shape %s, but the labelled data has %d classes"
                         % (where, tuple(scores.shape), classes))
    return scores


class Tally(object):
    """Top-1 (and top-5 with more than 5 classes) of ONE model, streamed; per class too."""

    def __init__(self, classes):
        self.classes = int(classes)
        self.k = TOP_K if self.classes > TOP_K else None
        self.samples = 0
        self.top1 = 0
        self.topk = 0
        self.per_class_samples = np.zeros(self.classes, np.int64)
        self.per_class_top1 = np.zeros(self.classes, np.int64)

    def add(self, labels, scores):
        """Count a batch; returns the batch's top-1 predictions (B,) int32."""
        labels = np.asarray(labels, np.int64).reshape(-1)
        scores = check_scores(scores, self.classes, "the model")
        predicted = np.argmax(scores, axis=1)
        right = predicted == labels
        self.samples += len(labels)
        self.top1 += int(np.sum(right))
        if self.k:
            self.topk += int(np.sum(np.any(top_k(scores, self.k) == labels[:, None], axis=1)))
        np.add.at(self.per_class_samples, labels, 1)
        np.add.at(self.per_class_top1, labels, right.astype(np.int64))
        return predicted.astype(np.int32)

    def summary(self):
        result = {"samples": self.samples, "classes": self.classes, "top1": _percent(self.top1, self.samples),
                  "correct": self.top1}
        if self.k:
            result["top5"] = _percent(self.topk, self.samples)
        return result


class PairedTally(object):
    """The float and the int8 model on the same samples: both top-1s, the 2x2 table, flips, per class."""

    def __init__(self, classes):
        self.float = Tally(classes)
        self.int8 = Tally(classes)
        self.table = np.zeros((2, 2), np.int64)  # [float right?][int8 right?]
        self.flipped = 0

    @property
    def samples(self):
        return self.float.samples

    def add(self, labels, float_scores, int8_scores):
        """Count a batch; returns (float top-1, int8 top-1) predictions of the batch."""
        labels = np.asarray(labels, np.int64).reshape(-1)
        float_top1 = self.float.add(labels, float_scores)
        int8_top1 = self.int8.add(labels, int8_scores)
        float_right = (float_top1 == labels).astype(np.int64)
        int8_right = (int8_top1 == labels).astype(np.int64)
        np.add.at(self.table, (float_right, int8_right), 1)
        self.flipped += int(np.sum(float_top1 != int8_top1))
        return float_top1, int8_top1

    def summary(self, class_names=None):
        """The ``eval`` numbers: samples, float/int8 top-1 (top-5) in percent, the drop in points with its
        paired 95 % interval, flipped predictions, the 2x2 table and the classes that lose most."""
        n = self.samples
        both, float_only = int(self.table[1, 1]), int(self.table[1, 0])
        int8_only, neither = int(self.table[0, 1]), int(self.table[0, 0])
        low, high = paired_difference_interval(both, float_only, int8_only, neither)
        result = {
            "samples": n,
            "classes": self.float.classes,
            "unit": "percent",
            "float_top1": _percent(self.float.top1, n),
            "int8_top1": _percent(self.int8.top1, n),
            "drop_points": _percent(self.float.top1 - self.int8.top1, n),
            "drop_ci95": [100.0 * low, 100.0 * high],
            "ci_method": "Newcombe hybrid score interval for paired proportions (1998, method 10)",
            "flipped": self.flipped,
            "correctness": {"both": both, "float_only": float_only, "int8_only": int8_only, "neither": neither},
        }
        if self.float.k:
            result["float_top5"] = _percent(self.float.topk, n)
            result["int8_top5"] = _percent(self.int8.topk, n)
        result["classes_losing_most"] = self.losing_classes(class_names)
        return result

    def losing_classes(self, class_names=None, limit=LOSING_CLASSES):
        """The classes whose int8 top-1 is most below the float's (only classes that lose), worst first."""
        rows = []
        for index in range(self.float.classes):
            count = int(self.float.per_class_samples[index])
            lost = int(self.float.per_class_top1[index] - self.int8.per_class_top1[index])
            if count == 0 or lost <= 0:
                continue
            rows.append({"class": class_names[index] if class_names else index, "index": index, "samples": count,
                         "float_top1": _percent(int(self.float.per_class_top1[index]), count),
                         "int8_top1": _percent(int(self.int8.per_class_top1[index]), count),
                         "drop_points": _percent(lost, count), "lost": lost})
        rows.sort(key=lambda row: (-row["lost"], -row["drop_points"], row["index"]))
        return rows[:limit]
