"""What the weight average adds on one trajectory: a ``weight_average`` run's last finished epoch scored with its
averaged weights and with the raw weights training reached, user by user.

Two runs with and without ``weight_average`` differ in their training noise as well; the training state a run leaves
(``<checkpoint>.resume.pth``) holds both the raw weights and their average at the same step, so their difference is
the average's alone. Reloads the run (its checkpoint and resume state must still exist), no training. Writes two
result files with per-user results, ``<output>-average.json`` and ``<output>-raw.json``; their seeds merge into two
rows with a paired test:

    python benchmarks/average_or_raw.py benchmarks/results/beauty-cpu/ablations/RUN-2020.json --output DIR/RUN-2020
    python benchmarks/compare.py --merge DIR/RUN-20??-average.json DIR/RUN-20??-raw.json \\
        --reference="<model> [raw weights, last epoch]" --output DIR/average-or-raw
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_run, reload_run, scored, scored_user_results  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults, per_user_metrics, write_result_file  # noqa: E402
from recbole_cemg.resume import state_path  # noqa: E402
from recbole_cemg.weight_average import WeightAverage  # noqa: E402


def user_results(model: torch.nn.Module, loader, item_counts: torch.Tensor) -> UserResults:
    """Every user's target rank and top 10 under ``model``, as the run's own evaluation recorded them."""
    return scored_user_results(scored(model, loader), [interaction for interaction, *_ in loader], loader._dataset,
                               item_counts)


def last_epoch_results(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's result at its last finished epoch under ``raw`` and ``average`` weights (the run's record, its
    metrics and per-user results replaced)."""
    model, data = reload_run(run)
    path = state_path(run["checkpoint"])
    if not os.path.isfile(path):
        raise InputError(f"run '{run['model']}': its training state {path} is gone; rerun it.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not state.get("weight_average"):
        raise InputError(f"run '{run['model']}' kept no average of its weights (weight_average 0): nothing to compare.")
    metrics = per_user_metrics(run["test_result"])
    model.load_checkpoint_state(state["model"])
    average = WeightAverage(model, run["config"]["weight_average"])
    average.load_state_dict(state["weight_average"])
    results = {}
    for label, weights in (("raw", contextlib.nullcontext()), ("average", average.swapped_in())):
        with weights:
            valid, test = (user_results(model, loader, data.item_counts) for loader in (data.valid, data.test))
        name = "raw weights" if label == "raw" else "weight average"
        results[label] = {**run, "model": f"{run['model']} [{name}, last epoch]",
                          "best_valid_result": {m: round(float(valid.metric(m).mean()), 4) for m in metrics},
                          "test_result": {m: round(float(test.metric(m).mean()), 4) for m in metrics},
                          "per_user": test, "last_epoch": state["epoch"], "score_fusion": None, "collaborative": None}
    return results


@command_line("average_or_raw")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="result file of a finished run with weight_average > 0")
    parser.add_argument("--output", required=True, help="prefix of the two result files written")
    args = parser.parse_args(argv)
    for label, result in last_epoch_results(load_run(args.run)).items():
        write_result_file(result, f"{args.output}-{label}.json")
        print(f"{result['model']}: valid {result['best_valid_result']}, test {result['test_result']}")


if __name__ == "__main__":
    main()
