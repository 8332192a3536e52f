"""Where a test-metric gap sits on Beauty: pairs the source ordered by ASIN (same-day purchases) or by time.

Beauty (P5 split) has no timestamps, only order, and the source breaks same-day ties by ASIN (``../shared/DESIGN.md``):
when a user's validation and test items were bought the same day, the test item is always the one with the larger
ASIN; on different days, about half the time. The share ``s`` of same-day pairs therefore follows from the share of
test users whose test ASIN is the larger, ``P(up) = s + (1 - s) / 2``. This reads finished runs (their per-user
results, seeds pooled per user), splits the test users by that order, and reports each model's metric in both
groups, the paired difference against the reference in each, and the implied value on the same-day pairs alone,
``(m_up P(up) - m_down P(down)) / s``, assuming different-day pairs score alike in either order. With ``--codes``
(a CEMG run's code file), each group is split again by whether the test item shares its first code with the
validation item: siblings in the code tree, which a generator can tell apart only by their later codes and an ID
model by their own embeddings. No training.

    python benchmarks/same_day_pairs.py --merge benchmarks/results/beauty-cpu/sasrec-20??.json \
        benchmarks/results/beauty-cpu/ablations/codes8x256-20??.json \
        --codes .devrun/ckpt/codes8x256-2020/CEMG-Dec-02-2026_19-10-37-069712.codes.json \
        --output benchmarks/results/beauty-cpu/ablations/same-day-pairs.md
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import data_overrides, derived_rows, merge_runs, print_table  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults  # noqa: E402
from recbole_cemg.model.cemg import read_codes_file  # noqa: E402
from recbole_cemg.significance import paired_difference, per_user_means  # noqa: E402

METRICS = ("recall@10", "ndcg@10")


def validation_items(inter_file: str) -> pd.Series:
    """Each user's validation item (the second-to-last in the order field), by user token."""
    if not os.path.isfile(inter_file):
        raise InputError(f"--inter: no file {inter_file}; give the data set's atomic .inter file.")
    inter = pd.read_csv(inter_file, sep="\t", dtype=str)
    user, item, order = inter.columns[:3]
    inter[order] = inter[order].astype(float)
    second_last = inter.sort_values([user, order], kind="stable").groupby(user).nth(-2)
    return pd.Series(second_last[item].to_numpy(), index=second_last[user].to_numpy())


def order_groups(users: UserResults, valid: pd.Series) -> dict[str, set[str]]:
    """The test users whose test ASIN is larger than their validation item's, and the others."""
    up = {u for u, item in zip(users.users, users.items) if u in valid.index and item > valid[u]}
    return {"test ASIN > valid": up, "test ASIN < valid": set(users.users) - up}


def sibling_groups(users: UserResults, valid: pd.Series, codes: dict[str, list[int]],
                   order: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each order group split by whether the test item shares its first code with the validation item (a sibling
    in the code tree: the items the generator tells apart only by their later codes)."""
    sibling = {u for u, item in zip(users.users, users.items)
               if u in valid.index and codes[item][0] == codes[valid[u]][0]}
    return {f"{name}, {kind}": members & sibling if kind == "sibling" else members - sibling
            for name, members in order.items() for kind in ("sibling", "other")}


def group_rows(name: str, runs: list[UserResults], reference: list[UserResults] | None,
               groups: dict[str, set[str]]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """A model's table rows, one per group (the metrics and the paired difference against ``reference``), and its
    metric means per group."""
    lines, means = [], {}
    for group, members in groups.items():
        mine = [r.select(members) for r in runs]
        means[group] = {m: float(np.mean(list(per_user_means(mine, m).values()))) for m in METRICS}
        deltas = ["-"] * len(METRICS)
        if reference is not None and len(members) > 1:  # a paired test needs two users
            theirs = [r.select(members) for r in reference]
            deltas = [f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" + {"win": " ▲", "loss": " ▼", "tie": ""}[d.verdict]
                      for d in (paired_difference(mine, theirs, m) for m in METRICS)]
        lines.append(f"| {name} | {group} ({len(members)}) | " + " | ".join(f"{means[group][m]:.4f}" for m in METRICS)
                     + " | " + " | ".join(deltas) + " |")
    return lines, means


def group_table(models: dict[str, list[UserResults]], valid: pd.Series, reference: str,
                codes: dict[str, list[int]] | None = None) -> str:
    """Per model: the metrics on the two order groups, the paired difference against ``reference`` in each, and
    the implied same-day-only values; with ``codes`` (item token -> code tuple), a second table of the order groups
    split by whether the test item is a sibling of the validation item."""
    order = order_groups(models[reference][0], valid)
    p_up = len(order["test ASIN > valid"]) / sum(len(g) for g in order.values())
    same_day = 2 * p_up - 1
    header = "| model | group (users) | " + " | ".join(METRICS) + " | " + " | ".join(
        f"Δ {m} vs {reference}" for m in METRICS) + " |\n|" + "---|" * (2 + 2 * len(METRICS))
    lines = [f"Test users whose test ASIN is the larger: {p_up:.3f}, so an implied same-day share s = "
             f"{same_day:.3f}.", "", header]
    for name, runs in models.items():
        rows, means = group_rows(name, runs, None if name == reference else models[reference], order)
        up, down = means["test ASIN > valid"], means["test ASIN < valid"]
        lines += rows + [f"| {name} | same-day pairs, implied | " + " | ".join(
            f"{(up[m] * p_up - down[m] * (1 - p_up)) / same_day:.4f}" for m in METRICS) + " |" + " |" * len(METRICS)]
    if codes is not None:
        siblings = sibling_groups(models[reference][0], valid, codes, order)
        lines += ["", "Split by whether the test item shares its first code with the validation item (sibling):", "",
                  header]
        for name, runs in models.items():
            lines += group_rows(name, runs, None if name == reference else models[reference], siblings)[0]
    return "\n".join(lines) + "\n"


def per_model(runs: list[dict[str, Any]]) -> dict[str, list[UserResults]]:
    """Each model's per-user results (one per seed), in the order of the files; a CEMG run's score-fusion row too."""
    models: dict[str, list[UserResults]] = {}
    for run in (r for row in runs for r in [row, *derived_rows(row)]):
        if isinstance(run.get("per_user"), UserResults):
            models.setdefault(run["model"], []).append(run["per_user"])
    if not models:
        raise InputError("--merge: none of the runs has per-user results (<result>.users.tsv.gz).")
    return models


@command_line("same_day_pairs")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merge", nargs="+", required=True, help="result files of finished runs (seeds pooled)")
    parser.add_argument("--reference", default=None, help="the model the others are paired against (default: the "
                                                          "first)")
    parser.add_argument("--inter", default=None, help="the atomic .inter file (default: the first run's data set)")
    parser.add_argument("--codes", default=None, help="a run's .codes.json: also split by whether the test item "
                                                      "shares its first code with the validation item")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    runs = merge_runs(args.merge)
    models = per_model(runs)
    reference = args.reference or next(iter(models))
    if reference not in models:
        raise InputError(f"--reference '{reference}' is not one of the models: {', '.join(models)}.")
    inter = args.inter or os.path.join(data_overrides(runs[0])["data_path"], runs[0]["dataset"],
                                       f"{runs[0]['dataset']}.inter")
    codes = read_codes_file(args.codes, "--codes", otherwise="")["codes"] if args.codes else None
    print_table(group_table(models, validation_items(inter), reference, codes), args.output)


if __name__ == "__main__":
    main()
