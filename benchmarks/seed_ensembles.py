"""How different are a model's runs? Each model's seeds ensembled, CEMG's against SASRec-CE's.

Two SASRec runs differ by their initialisation and batch order; two CEMG runs also by their tokenizer fit, i.e. by how
the items are coded. Summing the runs' log-probabilities (each run's softmax over the items; for two runs the
``B + B`` rows' score fusion at weight 1) shows how much a second and a third run add: the more the runs' rankings
differ, the more the ensemble gains. This reloads every run's checkpoint (no training), scores the test users once
per run, and reports recall@10 / ndcg@10 of each model's single runs (mean), every pair of its runs and all its runs
together, each ensemble paired against the same ensemble of the reference model (its first ``--runs`` group).

    D=benchmarks/results/beauty-cpu
    python benchmarks/seed_ensembles.py --runs $D/sasrec-202?.json \
        --runs $D/ablations/codes8x256-stride20-202?.json --output $D/ablations/seed-ensembles.md

Every run's checkpoint must still exist where its result file says (``checkpoint``); a group's runs must be of one
model and data split, or the group is given a ``--name``: e.g. to tell how much of two CEMG runs' difference is their
codes, a run trained on another run's codes (``tokenizer_path``, a model name of its own) paired with that run, against
two runs with codes of their own (``ablations/codes-or-generator-2020.md``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_run, print_table, reload_run, same_targets, scored  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults, target_ranks  # noqa: E402
from recbole_cemg.significance import paired_difference  # noqa: E402

METRICS = ("recall@10", "ndcg@10")


def run_log_probs(run: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The run's log-probability of every item for each test batch (half precision: several runs stay in memory),
    and the batches' targets."""
    model, data = reload_run(run)
    batches = scored(model, data.test)
    return [torch.log_softmax(s, dim=-1).half() for s, _ in batches], [t for _, t in batches]


def ranked(log_probs: list[list[torch.Tensor]], targets: list[torch.Tensor]) -> UserResults:
    """The target's rank (1 = top) under the sum of the runs' log-probabilities, user by user."""
    ranks = []
    for batch, target in enumerate(targets):
        ranks.append(target_ranks(sum(run[batch].float() for run in log_probs), target))
    ranks = torch.cat(ranks).numpy()
    users = [str(i) for i in range(len(ranks))]  # the same users in the same order in every run (checked)
    return UserResults(users, users, ranks, np.zeros(len(ranks), dtype=np.int64))


def ensembles(groups: list[list[dict[str, Any]]], labels: list[str] | None = None) -> str:
    """The markdown table: per model (or labelled group), its single runs, pairs and all runs; paired against the
    first group's."""
    scored_groups, targets = [], None
    for index, runs in enumerate(groups):
        names = {run["model"] for run in runs}
        label = labels[index] if labels else None
        if len(names) != 1 and label is None:
            raise InputError(f"--runs: one group holds runs of {sorted(names)}; give the seeds of one model per group, "
                             "or name each group (--name).")
        per_run = []
        for run in runs:
            log_probs, run_targets = run_log_probs(run)
            if targets is None:
                targets = run_targets
            elif not same_targets(targets, run_targets):
                raise InputError(f"run '{run['model']}' (seed {run.get('seed')}) was tested on other users or in other "
                                 "batches: give runs of one data split with the same eval_batch_size.")
            per_run.append(log_probs)
        scored_groups.append((label or names.pop(), per_run))
    lines = ["| model | runs | ensemble of | " + " | ".join(f"test {m}" for m in METRICS) + " | "
             + " | ".join(f"Δ {m} vs {scored_groups[0][0]}" for m in METRICS) + " |",
             "|---" * (3 + 2 * len(METRICS)) + "|"]
    reference: dict[int, list[UserResults]] = {}
    for index, (name, per_run) in enumerate(scored_groups):
        for size in range(1, len(per_run) + 1):
            results = [ranked([per_run[i] for i in subset], targets)
                       for subset in itertools.combinations(range(len(per_run)), size)]
            if index == 0:
                reference[size] = results
            values = [f"{np.mean([r.metric(m).mean() for r in results]):.4f}" for m in METRICS]
            deltas = []
            for metric in METRICS:
                if index == 0 or size not in reference:
                    deltas.append("-")
                    continue
                # each user's metric averaged over the ensembles of this size, paired with the reference's
                d = paired_difference(results, reference[size], metric)
                mark = {"win": " ▲", "loss": " ▼"}.get(d.verdict, "")
                deltas.append(f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]{mark}")
            what = "1 run (mean)" if size == 1 else f"{size} runs (mean of {len(results)})"
            lines.append(f"| {name} | {len(per_run)} | {what} | " + " | ".join(values) + " | " + " | ".join(deltas)
                         + " |")
    return "\n".join(lines) + ("\n\nEnsemble: the sum of the runs' log-probabilities (each a softmax over the "
                               "items). Δ: the paired difference of the per-user test metric (averaged over the "
                               "ensembles of one size) against the first model's ensembles of the same size, with "
                               "the 95 % confidence interval of a paired t-test.\n")


@command_line("seed_ensembles")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", action="append", required=True,
                        help="result files of one model's runs (seeds); repeat for another model (first: reference)")
    parser.add_argument("--name", action="append",
                        help="a label for each --runs group, in order (then a group may hold runs of several models)")
    parser.add_argument("--output", help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.runs):
        raise InputError(f"--name: {len(args.name)} name(s) for {len(args.runs)} --runs group(s); name every group.")
    print_table(ensembles([[load_run(path) for path in group] for group in args.runs], args.name), args.output)


if __name__ == "__main__":
    main()
