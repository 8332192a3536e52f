"""How many of a model's top-10 slots go to items the user already has, and the test result with those items removed.

RecBole's full ranking of a sequential model leaves the items of the user's history in the ranking (only general
recommenders mask them), while on the Amazon data sets of this project no user ever interacts with an item twice: an
item of the history in the top 10 is a wasted slot. A model whose item embedding is shared by its input and output
(SASRec) may score the item it has just read near the top; CEMG's generator may learn otherwise. Both are ranked under
the same protocol, so the table stays as it is; this script says how much of a difference between two models comes
from that alone. It reloads a finished run (checkpoint and data as recorded), scores its test users, and writes a
result file whose per-user ranks are those among the items outside each user's history (``<model> [history
masked]``), which ``compare.py --merge`` pairs like any other run:

    python benchmarks/history_items.py benchmarks/results/beauty-cpu/sasrec-2020.json --output DIR/sasrec-2020
    python benchmarks/compare.py --merge DIR/*-20??.json --reference="SASRec [history masked]" --output DIR/table

A CEMG run's score fusion with its collaborative model is re-done the same way, its weight chosen again on the
masked validation; ``--ensembles --set mask_history=True`` then fuses the merged baselines' checkpoints (``B + B``)
under the same protocol, the rows the fused one is compared with.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_run, reload_run, scored, scored_user_results  # noqa: E402
from recbole_cemg.errors import command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults, per_user_metrics, write_result_file  # noqa: E402
from recbole_cemg.utils import get_trainer  # noqa: E402


@torch.no_grad()
def history_masked(model: torch.nn.Module, loader, item_counts: torch.Tensor) -> tuple[UserResults, dict[str, float]]:
    """Every test user's result with the items of its history removed from the ranking, and how the unmasked
    ranking used its top: the share of top-10 slots and of first places held by history items, and the share of
    targets that were in the history (a repeat, which the masked ranking misses; none on the Amazon data sets)."""
    batches = scored(model, loader)
    interactions = [interaction for interaction, *_ in loader]  # the same users, in the same batches
    slots = first = repeats = 0
    for (scores, targets), interaction in zip(batches, interactions):
        in_history = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, interaction[model.ITEM_SEQ], True)
        in_history[:, 0] = False  # padding
        held = in_history.gather(1, scores.topk(10, dim=1).indices)
        slots += int(held.sum())
        first += int(held[:, 0].sum())
        repeats += int(in_history.gather(1, targets.view(-1, 1)).sum())  # such a target is missed once masked
        scores[in_history] = float("-inf")  # re-ranked in place
    results = scored_user_results(batches, interactions, loader._dataset, item_counts)
    count = len(results.users)
    usage = {"history share of top-10 slots": slots / (10 * count), "history at rank 1": first / count,
             "targets in the history": repeats / count}
    return results, usage


def masked_fusion(run: dict[str, Any], model: torch.nn.Module, data) -> dict[str, Any] | None:
    """A CEMG run's score fusion with its collaborative model, done again under ``mask_history``: the weight chosen
    on the masked validation, tested masked (None for a run without one). Compared with the baseline ensembles of the
    same protocol (``compare.py --merge ... --ensembles --set mask_history=True``)."""
    if not run.get("score_fusion"):
        return None
    config = data.test.config  # the loaders', the model's and the trainer's config: from here on, masked
    config["mask_history"] = True
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return {**trainer.score_fusion(data.valid, data.test, data.item_counts),
            "unmasked_test_result": run["score_fusion"]["test_result"]}


def masked_result(run: dict[str, Any]) -> dict[str, Any]:
    """The run's record with its test result and per-user results those of the history-masked ranking (and its
    score fusion's, re-fused on the masked validation)."""
    model, data = reload_run(run)
    test, usage = history_masked(model, data.test, data.item_counts)
    metrics = per_user_metrics(run["test_result"])
    return {**run, "model": f"{run['model']} [history masked]", "per_user": test, "history_items": usage,
            "config": {**run["config"], "mask_history": True},
            "test_result": {m: round(float(test.metric(m).mean()), 4) for m in metrics},
            "unmasked_test_result": run["test_result"], "score_fusion": masked_fusion(run, model, data),
            "collaborative": None}


@command_line("history_items")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="result file of a finished run whose checkpoint still exists")
    parser.add_argument("--output", required=True, help="prefix of the result file written")
    args = parser.parse_args(argv)
    result = masked_result(load_run(args.run))
    write_result_file(result, f"{args.output}.json")
    print(f"{result['model']}: {result['history_items']}; test {result['unmasked_test_result']} -> "
          f"{result['test_result']} with the history masked")


if __name__ == "__main__":
    main()
