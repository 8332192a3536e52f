"""What holding items out costs the warm users: one model's run at cold_item_ratio 0 against its run with items held
out, on exactly the test users whose target was not held out (the ``held_out`` column of the cold run's per-user
results), with the paired difference (issue 17's warm-user target: at least 0.95x of the ratio-0 run).

    python benchmarks/cold_cost.py --pair SASRec benchmarks/results/beauty-cpu/sasrec-2020.json \
        benchmarks/results/beauty-cpu/cold-sasrec-2020.json --output benchmarks/results/beauty-cpu/cold/warm-cost.md

Each result is a run_cemg.py result file or a one-run comparison output (its ``.json``).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_run, print_table  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults  # noqa: E402
from recbole_cemg.significance import paired_difference  # noqa: E402

METRICS = ("recall@10", "ndcg@10")


def per_user(path: str) -> UserResults:
    users = load_run(path).get("per_user")
    if not isinstance(users, UserResults):
        raise InputError(f"{path}: its run has no per-user results; rerun it with this version of the plugin.")
    return users


def warm_cost_row(label: str, ratio0: str, cold: str) -> str:
    """One markdown row: warm users, both runs' metrics on them, the ratio, the paired difference."""
    cold_users = per_user(cold)
    if cold_users.held_out is None:
        raise InputError(f"{cold}: its per-user results have no held_out column (a run without held-out items, or "
                         "one written before the column existed). Give the run with cold_item_ratio > 0 second.")
    warm = {user for user, out in zip(cold_users.users, cold_users.held_out) if not out}
    before, after = per_user(ratio0).select(warm), cold_users.select(warm)
    if len(before.users) != len(warm):
        raise InputError(f"{ratio0}: tests {len(before.users)} of the cold run's {len(warm)} warm users; give two runs "
                         "of the same data set and split.")
    cells = [label, f"{len(warm):,}"]
    for metric in METRICS:
        mean0, mean1 = before.metric(metric).mean(), after.metric(metric).mean()
        diff = paired_difference([after], [before], metric)
        cells += [f"{mean0:.4f}", f"{mean1:.4f}", f"{mean1 / mean0:.3f}x" if mean0 else "-",
                  f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"]
    return "| " + " | ".join(cells) + " |"


@command_line("cold_cost")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "RATIO0", "COLD"),
                        help="a row: its label, the run at cold_item_ratio 0, the run with items held out")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    header = ["model", "warm users"] + [f"{m} {part}" for m in METRICS
                                         for part in ("ratio 0", "held out", "ratio", "Δ (paired, 95 % CI)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [warm_cost_row(*pair) for pair in args.pair]
    print_table("\n".join(lines) + "\n", args.output)


if __name__ == "__main__":
    main()
