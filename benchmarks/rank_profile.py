"""Where in the ranking two models differ: hit@k at cutoffs from 1 to 100, each paired against a reference row.

Recall@10 and NDCG@10 summarise the top ten in two numbers; on Beauty CEMG wins the one and loses the other against
SASRec. The per-user results of the comparison outputs (every user's target rank) say at which cutoffs each model
is ahead, with no reloading and no training. Runs merge as in ``compare.py --merge`` (a row's seeds pooled per user;
``--group`` joins runs of several names into one row):

    python benchmarks/rank_profile.py --merge benchmarks/results/beauty-cpu/sasrec-20??.json \\
        benchmarks/results/beauty-cpu/ablations/views2x8-first4-transition-20??.json --reference SASRec \\
        --output benchmarks/results/beauty-cpu/ablations/rank-profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.cli.compare import group_rows  # noqa: E402
from recbole_cemg.compare import derived_rows, merge_runs  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402
from recbole_cemg.significance import paired_difference  # noqa: E402

CUTOFFS = (1, 2, 3, 5, 10, 20, 50, 100)


def rank_profile(rows: list[dict], reference: str, cutoffs: tuple[int, ...] = CUTOFFS) -> list[dict]:
    """Per row (its score-fusion and stage-1 rows included): hit@k for each cutoff, averaged over users and seeds,
    the median target rank, and each hit@k's paired difference against ``reference``."""
    rows = [r for row in rows for r in [row, *derived_rows(row)] if isinstance(r.get("per_user"), UserResults)]
    users = {}
    for row in rows:
        users.setdefault(row["model"], []).append(row["per_user"])
    if reference not in users:
        raise InputError(f"--reference '{reference}' is not a row with per-user results; rows: {', '.join(users)}.")
    profile = []
    for model, runs in users.items():
        entry = {"model": model, "seeds": len(runs),
                 "median rank": statistics.fmean(float(np.median(run.ranks)) for run in runs)}
        for k in cutoffs:
            entry[f"hit@{k}"] = statistics.fmean(float(run.metric(f"hit@{k}").mean()) for run in runs)
            if model != reference:
                diff = paired_difference(runs, users[reference], f"hit@{k}")
                entry[f"hit@{k} vs ref"] = {"mean": diff.mean, "low": diff.low, "high": diff.high,
                                            "verdict": diff.verdict}
        profile.append(entry)
    return profile


def markdown(profile: list[dict], reference: str, cutoffs: tuple[int, ...] = CUTOFFS) -> str:
    """The profile as a table: hit@k per row, with the paired difference (▲ / ▼: significant) under each."""
    mark = {"win": " ▲", "loss": " ▼", "tie": ""}
    lines = ["| model | seeds | " + " | ".join(f"hit@{k}" for k in cutoffs) + " | median rank |",
             "|---|---|" + "---|" * len(cutoffs) + "---|"]
    for entry in profile:
        cells = []
        for k in cutoffs:
            cell = f"{entry[f'hit@{k}']:.4f}"
            diff = entry.get(f"hit@{k} vs ref")
            if diff:
                cell += f" ({diff['mean']:+.4f}{mark[diff['verdict']]})"
            cells.append(cell)
        lines.append(f"| {entry['model']} | {entry['seeds']} | " + " | ".join(cells)
                     + f" | {entry['median rank']:.0f} |")
    lines.append(f"\nIn brackets: the paired difference of the per-user hit@k against {reference} (each user's mean "
                 "over seeds); ▲ / ▼: the 95 % confidence interval of a paired t-test excludes 0.")
    return "\n".join(lines)


@command_line("rank_profile.py")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merge", nargs="+", required=True, help="comparison outputs or result files of runs")
    parser.add_argument("--group", nargs="+", action="append", default=[], metavar=("ROW", "MODEL"),
                        help="the runs of these models form one row named ROW (repeatable)")
    parser.add_argument("--reference", required=True, help="the row every other row is paired against")
    parser.add_argument("--output", help="prefix of the .md and .json written (default: print only)")
    args = parser.parse_args()
    rows = group_rows(merge_runs(args.merge), args.group)
    profile = rank_profile(rows, args.reference)
    table = markdown(profile, args.reference)
    print(table)
    if args.output:
        with atomic_write(f"{args.output}.md", "w", encoding="utf-8") as f:
            f.write(table + "\n\n" + " ".join(["python benchmarks/rank_profile.py", *sys.argv[1:]]) + "\n")
        with atomic_write(f"{args.output}.json", "w", encoding="utf-8") as f:
            json.dump(profile, f, indent=1)


if __name__ == "__main__":
    main()
