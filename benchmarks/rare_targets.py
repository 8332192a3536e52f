"""Where a code-based generator loses the rare test targets an ID model finds: popularity bias, or the wrong item of
the right cell?

Issue 16's gap sits on test targets seen fewer than 10 times in training. This reloads two finished runs on the same
split (CEMG and an ID model such as SASRec; checkpoints, no training) and reports two things by the test target's
popularity bucket (its training interactions):

1. A post-hoc popularity correction: each model's log-probabilities minus ``tau * log(1 + training count)``, on the
   validation and the test users. If a model's deficit on rare targets were a lean towards popular items, some
   ``tau`` > 0 would lift its test recall (whose targets are rarer than validation's) without costing validation much.
2. Cells: with CEMG's first code of each tokenizer view as an item's cells, how often each model's top 10 holds an
   item of the target's (first view's) cell, and, for the targets the ID model ranks in its top 10 and CEMG does not,
   how often CEMG's top 10 held one of the target's cells (the right cell, a wrong item of it) and where CEMG ranked
   the target. A high share says the loss is telling an item from its cell-mates, not finding the cell.

    python benchmarks/rare_targets.py benchmarks/results/beauty-cpu/recheck/views2x8-first4-transition-2020.json \
        benchmarks/results/beauty-cpu/sasrec-2020.json --output benchmarks/results/beauty-cpu/ablations/rare-targets-2020.md
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_runs, print_table, reload_run, same_targets, scored  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults, target_ranks, training_item_counts  # noqa: E402
from recbole_cemg.significance import POPULARITY_BUCKETS  # noqa: E402

BUCKETS = [bucket for bucket in POPULARITY_BUCKETS if bucket[2] > 0]  # test targets have training interactions


def pure_run(path: str) -> dict[str, Any]:
    """The one run of a result file that is a model's own ranking (not a score-fusion or ensemble row)."""
    runs = [run for run in load_runs(path) if not run.get("ensemble_of") and "collab score" not in run["model"]]
    if len(runs) != 1:
        raise InputError(f"{path}: holds {len(runs)} runs of a model's own ranking; give the result of one run.")
    return runs[0]


def cell_columns(run: dict[str, Any]) -> list[int]:
    """The code columns that hold each tokenizer view's first code (the item's cell in that view)."""
    config = run["config"]
    views, view_levels = config.get("tokenizer_views", 1), config.get("view_levels", 0)
    return [view * view_levels for view in range(views)] if view_levels else [0]


@torch.no_grad()
def reduced(model: torch.nn.Module, loader, log_prior: torch.Tensor, taus: list[float],
            codes: torch.Tensor, columns: list[int]) -> dict[str, torch.Tensor]:
    """Per user: the target, its rank under each popularity correction, and (``codes``) the cell statistics of the
    uncorrected ranking; kept small so that two models' scores never sit in memory together."""
    out: dict[str, list[torch.Tensor]] = {"targets": [], "ranks": [], "cell_top10": [], "any_cell_top10": [],
                                          "rank_in_cell": []}
    for scores, targets in scored(model, loader):
        log_probs = torch.log_softmax(scores, dim=-1)
        out["targets"].append(targets)
        out["ranks"].append(torch.stack([target_ranks(log_probs - tau * log_prior, targets) for tau in taus], 1))
        top = log_probs.topk(10, dim=1).indices
        hits = [(codes[top, c] == codes[targets, c][:, None]).any(1) for c in columns]
        out["cell_top10"].append(hits[0])
        out["any_cell_top10"].append(torch.stack(hits).any(0))
        same_cell = codes[:, columns[0]][None, :] == codes[targets, columns[0]][:, None]
        target_score = log_probs.gather(1, targets[:, None])
        out["rank_in_cell"].append(((log_probs > target_score) & same_cell).sum(1) + 1)
    return {key: torch.cat(values) for key, values in out.items()}


def report(cemg_run: dict[str, Any], id_run: dict[str, Any], taus: list[float]) -> str:
    """The two markdown tables; ``taus`` must hold 0 (the runs as recorded)."""
    runs = {"cemg": cemg_run, "id": id_run}
    results: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    codes = columns = counts = None
    for key in ("cemg", "id"):  # CEMG first: its codes define the cells for both
        model, data = reload_run(runs[key])
        if codes is None:
            if not hasattr(model, "item_codes"):
                raise InputError(f"run '{cemg_run['model']}' is not a CEMG run (no item codes): give CEMG's result "
                                 "first, the ID model's second.")
            codes, columns = model.item_codes.cpu(), cell_columns(runs[key])
            counts = training_item_counts(data.train._dataset).cpu()
        log_prior = torch.log1p(counts.float())
        results[key] = {split: reduced(model, getattr(data, split), log_prior, taus, codes, columns)
                        for split in ("valid", "test")}
        del model, data
    for split in ("valid", "test"):
        if not same_targets([results["cemg"][split]["targets"]], [results["id"][split]["targets"]]):
            raise InputError(f"the two runs were scored on other {split} users: give runs of one data split.")
    names = {key: runs[key]["model"] for key in runs}
    test_counts = counts[results["cemg"]["test"]["targets"]].numpy()
    buckets = [(label, (test_counts >= low) & (test_counts <= high)) for label, low, high in BUCKETS]
    buckets = [(label, mask) for label, mask in buckets if mask.any()]

    def per_user(ranks: torch.Tensor, metric: str) -> np.ndarray:
        return UserResults([], [], ranks.numpy(), np.zeros(len(ranks), dtype=np.int64)).metric(metric)

    def recall(ranks: torch.Tensor, mask: np.ndarray | None = None) -> float:
        hit = per_user(ranks, "recall@10")
        return float(hit[mask].mean() if mask is not None else hit.mean())

    def ndcg(ranks: torch.Tensor) -> float:
        return float(per_user(ranks, "ndcg@10").mean())

    lines = ["### Post-hoc popularity correction: log-probability - tau x log(1 + training count)", "",
             "| model | tau | valid R@10 | valid N@10 | test R@10 | test N@10 | test R@10 by target's training count "
             + " / ".join(label for label, _ in buckets) + " |", "|---" * 7 + "|"]
    for key in ("id", "cemg"):
        for i, tau in enumerate(taus):
            valid, test = results[key]["valid"]["ranks"][:, i], results[key]["test"]["ranks"][:, i]
            lines.append(f"| {names[key]} | {tau:g} | {recall(valid):.4f} | {ndcg(valid):.4f} | {recall(test):.4f} | "
                         f"{ndcg(test):.4f} | " + " / ".join(f"{recall(test, m):.4f}" for _, m in buckets) + " |")
    cemg, ids = results["cemg"]["test"], results["id"]["test"]
    cemg_rank, id_rank = cemg["ranks"][:, taus.index(0.0)].numpy(), ids["ranks"][:, taus.index(0.0)].numpy()
    lines += ["", f"### Test targets and CEMG's cells (the first code of each of its {len(columns)} view(s))", "",
              "| target's training count | users | R@10 CEMG / ID | target's cell in the top 10, CEMG / ID "
              "| target's median rank in its cell (median cell size), CEMG / ID | ID hits CEMG misses "
              "| of those, a target's cell in CEMG's top 10 | of those, CEMG's median rank | CEMG hits ID misses |",
              "|---" * 9 + "|"]
    cell_sizes = torch.bincount(codes[:, columns[0]])[codes[cemg["targets"], columns[0]]].numpy()
    for label, m in buckets:
        id_only = m & (id_rank <= 10) & (cemg_rank > 10)
        cemg_only = m & (cemg_rank <= 10) & (id_rank > 10)
        any_cell = cemg["any_cell_top10"].numpy()
        lines.append(
            f"| {label} | {int(m.sum())} | {np.mean(cemg_rank[m] <= 10):.4f} / {np.mean(id_rank[m] <= 10):.4f} | "
            f"{cemg['cell_top10'].numpy()[m].mean():.3f} / {ids['cell_top10'].numpy()[m].mean():.3f} | "
            f"{np.median(cemg['rank_in_cell'].numpy()[m]):.0f} / {np.median(ids['rank_in_cell'].numpy()[m]):.0f} "
            f"({np.median(cell_sizes[m]):.0f}) | {int(id_only.sum())} | "
            f"{any_cell[id_only].mean() if id_only.any() else float('nan'):.3f} | "
            f"{np.median(cemg_rank[id_only]) if id_only.any() else float('nan'):.0f} | {int(cemg_only.sum())} |")
    return "\n".join(lines) + (f"\n\nCEMG: {names['cemg']}, ID model: {names['id']}; ranks over all items (history "
                               "items excluded, as RecBole ranks them).\n")


@command_line("rare_targets")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cemg", help="result file of a finished CEMG run (its checkpoint must still exist)")
    parser.add_argument("id_model", help="result file of a finished ID model's run on the same split (e.g. SASRec)")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
                        help="popularity corrections to try (0 is added: the runs as recorded)")
    parser.add_argument("--output", help="also write the tables (markdown) here")
    args = parser.parse_args(argv)
    taus = sorted(set(args.taus) | {0.0})
    print_table(report(pure_run(args.cemg), pure_run(args.id_model), taus), args.output)


if __name__ == "__main__":
    main()
