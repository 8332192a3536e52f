"""Paired comparisons of two models over the same test users, and test metrics by the target item's popularity.

Every function takes each model's per-user results of one or more seeds (``recbole_cemg.evaluation.UserResults``).
Seeds are pooled per user: a user's value is its mean over the model's seeds, so a model with three seeds and one
with one are still paired user by user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from recbole_cemg.errors import InputError
from recbole_cemg.evaluation import UserResults

# Training interactions of the target item: (label, lowest, highest) of each bucket.
POPULARITY_BUCKETS = (("0", 0, 0), ("1-4", 1, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20+", 20, math.inf))


@dataclass
class PairedDifference:
    """``mean`` = model - reference, averaged over ``users``, with the two-sided 95 % confidence interval and
    p-value of a paired t-test over users."""

    metric: str
    mean: float
    low: float
    high: float
    p_value: float
    users: int

    @property
    def verdict(self) -> str:
        """``win`` / ``loss`` when the interval excludes 0, else ``tie``."""
        return "win" if self.low > 0 else "loss" if self.high < 0 else "tie"


def per_user_means(runs: list[UserResults], metric: str) -> dict[str, float]:
    """Each user's metric averaged over the runs (seeds) that tested it."""
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for run in runs:
        for user, value in zip(run.users, run.metric(metric)):
            total[user] = total.get(user, 0.0) + float(value)
            count[user] = count.get(user, 0) + 1
    return {user: total[user] / count[user] for user in total}


def paired_difference(runs: list[UserResults], reference: list[UserResults], metric: str,
                      confidence: float = 0.95) -> PairedDifference:
    """Paired t-test of ``metric`` between a model's runs and a reference's, over the users both tested."""
    mine, theirs = per_user_means(runs, metric), per_user_means(reference, metric)
    users = sorted(mine.keys() & theirs.keys())
    if len(users) < 2:
        raise InputError(f"paired comparison of {metric}: the two models share {len(users)} test user(s); they must "
                         "be tested on the same data set and split.")
    diff = np.array([mine[u] - theirs[u] for u in users])
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0.0:  # identical per-user values (e.g. a model against itself)
        return PairedDifference(metric, mean, mean, mean, 1.0 if mean == 0 else 0.0, len(users))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(users) - 1)) * sd / math.sqrt(len(users))
    p_value = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(len(users))), len(users) - 1))
    return PairedDifference(metric, mean, mean - half, mean + half, p_value, len(users))


def popularity_breakdown(runs: list[UserResults], metrics: list[str]) -> list[dict]:
    """Per popularity bucket of the target item (training interactions): the share of test users in it and the
    metrics averaged over those users and the runs."""
    users = sum(len(run.ranks) for run in runs)
    rows = []
    for label, low, high in POPULARITY_BUCKETS:
        masks = [(run.train_counts >= low) & (run.train_counts <= high) for run in runs]
        size = sum(int(mask.sum()) for mask in masks)
        row = {"bucket": label, "users": size / len(runs) if runs else 0, "share": size / users if users else 0.0}
        for metric in metrics:
            values = np.concatenate([run.metric(metric)[mask] for run, mask in zip(runs, masks)]) if runs else []
            row[metric] = float(values.mean()) if size else math.nan
        rows.append(row)
    return rows
