"""Calibration or order? What a constant added to the score of every held-out item does to a finished cold-start run.

A generator trained without the held-out items can order them well among themselves and still rank them all below
the warm items, whose code embeddings training pushed up. This reloads a run's checkpoint (no training), scores the
validation and test users once, and for each constant ``b`` added to the held-out items' log-probabilities reports
recall@10 on all, cold-target and warm users and the share of held-out items in the top-10 lists; plus the test
recall@10 of the cold-target users when only the held-out items are ranked. ``b`` = 0 is the run as recorded.
``--shares`` adds the rows of a mixture instead: every user's distribution split into its held-out and its trained
part, each renormalised and given that fixed mass. ``--content FILE --content_weights ...`` adds the rows of a
hybrid: the run's score plus ``w`` times ``ContentSimilarity``'s (the cosine of an item's features in FILE to the
history's mean), which knows the held-out items as well as the others and tells, per user, which of them fit the
history (each weight with each ``b``). ``--keep_warm 0.95`` adds the operating points issue 17 asks for, chosen on
validation alone: for each content weight the largest ``b`` that keeps 0.95 x the warm recall@10 of the same model
at cold_item_ratio 0 (``--warm_reference``; default: this run) with the same content weight and no prior, and the
best cold-target recall@10 of them; one rule, no grid, for every model. ``--save FILE`` writes the chosen point
as a result file, so that ``compare.py --merge`` tabulates the points of several seeds and models with paired tests
(on all test users and on the cold-target ones). Then where the held-out items' codes landed (CEMG).

    python benchmarks/cold_prior.py benchmarks/results/beauty-cpu/cold/cold-sim-trained-title-2020.json \
        --biases 0 1 2 3 --shares 0.05 0.1 0.2 --output benchmarks/results/beauty-cpu/cold/prior-cold-sim-2020.md
    python benchmarks/cold_prior.py benchmarks/results/beauty-cpu/cold-sasrec-2020.json --biases 0 \
        --content .devrun/data/Beauty/Beauty.title_categories.npz --content_weights 5 10 20 --keep_warm 0.95 \
        --warm_reference benchmarks/results/beauty-cpu/sasrec-2020.json --save sasrec-point-2020.json

The run's checkpoint must still exist where its result file says (``checkpoint``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import (data_overrides, load_run, print_table, reload_run, same_targets,  # noqa: E402
                                  scored)
from recbole_cemg.config import Config  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import UserResults, per_user_metrics, target_ranks, write_result_file  # noqa: E402
from recbole_cemg.quick_start import add_cold_start  # noqa: E402
from recbole_cemg.utils import get_model  # noqa: E402


def rebuild(run: dict[str, Any], held_out: bool = True) -> tuple[torch.nn.Module, Any]:
    """``reload_run``; ``held_out``: refuse a run that held no items out."""
    if held_out and not run["config"].get("cold_item_ratio"):
        raise InputError(f"run '{run['model']}' held no items out (cold_item_ratio 0): nothing to calibrate.")
    return reload_run(run)


def reference_scores(reference: dict[str, Any], run: dict[str, Any], valid, test) -> tuple[list, list]:
    """The valid and test scores of ``reference``, a run of the same data with no items held out, user by user
    beside ``run``'s (``valid``, ``test``): the warm recall a cold-start run is held to (issue 17)."""
    if reference["dataset"] != run["dataset"] or reference["config"].get("cold_item_ratio"):
        raise InputError(f"--warm_reference: '{reference['model']}' must be a run of {run['dataset']} at "
                         "cold_item_ratio 0 (the same model without held-out items).")
    model, data = rebuild(reference, held_out=False)
    splits = scored(model, data.valid), scored(model, data.test)
    for mine, theirs in zip(splits, (valid, test)):
        if not same_targets([t for _, t in mine], [t for _, t in theirs]):
            raise InputError(f"--warm_reference: '{reference['model']}' was evaluated on other users or targets, or "
                             "in other batches: give a run of the same data split with the same eval_batch_size.")
    return splits


def content_similarity(run: dict[str, Any], dataset, feature_file: str) -> torch.nn.Module:
    """``ContentSimilarity`` over the run's items, from the text features in ``feature_file`` (nothing to train)."""
    overrides = dict(data_overrides(run), modalities=["text"], feature_files={"text": feature_file})
    config = Config(model="ContentSimilarity", dataset=run["dataset"], config_dict=overrides)
    return get_model("ContentSimilarity")(config, dataset).eval()


def with_content(batches, content_batches, weight: float):
    """The run's scores plus ``weight`` times the content similarity's, user by user. The similarity is -inf on the
    history's items and the padding item (it leaves them out); there it adds nothing, so the run's own scoring of them
    stands, as RecBole's protocol has it (and 0 x -inf would be NaN)."""
    return [(scores + weight * content.masked_fill(content.isinf(), 0.0), targets)
            for (scores, targets), (content, _) in zip(batches, content_batches)]


def constant_prior(bias: float):
    """Every held-out item's log-probability plus ``bias``: keeps each user's own share of held-out items, scaled."""
    return lambda scores, cold: scores + bias * cold.float()


def mixture_prior(share: float):
    """A two-part mixture ``share * p(i | held out) + (1 - share) * p(i | trained)``, each part the run's own
    distribution renormalised within its group: every user's list then holds the held-out items with the same
    prior mass, whatever mass the generator gave them as a group (it never saw one as a target)."""
    def mixed(scores: torch.Tensor, cold: torch.Tensor) -> torch.Tensor:
        within_cold = torch.log_softmax(scores.masked_fill(~cold, float("-inf")), dim=1) + math.log(share)
        within_warm = torch.log_softmax(scores.masked_fill(cold, float("-inf")), dim=1) + math.log1p(-share)
        return torch.where(cold, within_cold, within_warm)
    return mixed


def ranked(batches, cold: torch.Tensor, prior, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's target rank (1 = top) and top-``k`` list under the scores adjusted by ``prior``, as RecBole's
    evaluation ranks them (``PerUserRecording``)."""
    ranks, top = [], []
    for scores, targets in batches:
        shifted = prior(scores, cold)
        ranks.append(target_ranks(shifted, targets))
        top.append(shifted.topk(k, dim=1).indices)
    return torch.cat(ranks), torch.cat(top)


def with_prior(batches, cold: torch.Tensor, prior, k: int = 10) -> dict[str, float]:
    """recall@k of all, cold-target and warm users, and the cold share of the top-k lists, the scores adjusted by
    ``prior`` (``constant_prior`` or ``mixture_prior``)."""
    ranks, top = ranked(batches, cold, prior, k)
    hit, held = (ranks <= k).float(), cold[torch.cat([targets for _, targets in batches])]
    return {"all": float(hit.mean()), "cold": float(hit[held].mean()), "warm": float(hit[~held].mean()),
            "share": float(cold[top].float().mean())}


def among_cold_only(batches, cold: torch.Tensor, k: int = 10) -> float:
    """recall@k of the cold-target users when only the held-out items are ranked."""
    hits = []
    for scores, targets in batches:
        held = cold[targets]
        only = scores[held].masked_fill(~cold, float("-inf"))
        target_score = only[torch.arange(int(held.sum())), targets[held]]
        hits.append(((only > target_score.unsqueeze(1)).sum(1) < k).float())
    return float(torch.cat(hits).mean())


def code_placement(codes: torch.Tensor, cold: torch.Tensor, warm: torch.Tensor) -> list[str]:
    """Per code level: how many codes the held-out items use, and how many held-out items sit in a cell (a code of
    that level) they outnumber the warm items in; cells no warm item trains are what the generator scores blindly."""
    lines = ["| level | codes used by held-out items | held-out items in cells they outnumber the warm ones in |",
             "|---|---|---|"]
    for level in range(codes.shape[1] - 1):  # the de-duplication level carries no meaning
        size = int(codes[:, level].max()) + 1
        n_cold = torch.bincount(codes[cold, level], minlength=size)
        n_warm = torch.bincount(codes[warm, level], minlength=size)
        crowded = int(n_cold[n_cold > n_warm].sum())
        lines.append(f"| {level + 1} | {int((n_cold > 0).sum())} of {size} | {crowded} of {int(cold.sum())} |")
    return lines


def largest_bias(batches, cold: torch.Tensor, floor: float, bound: float = 64.0, steps: int = 14) -> float | None:
    """The largest constant ``b`` (within +-``bound``) whose warm recall@10 stays at or above ``floor``; ``None``
    when none does. Adding ``b`` moves the held-out items, and only them, past the others: warm recall can only fall
    and cold-target recall only rise as ``b`` grows, so this ``b`` is the most cold recall the floor allows."""
    def keeps(bias: float) -> bool:
        return with_prior(batches, cold, constant_prior(bias))["warm"] >= floor

    low, high = -bound, bound
    if not keeps(low):
        return None
    if keeps(high):
        return high
    for _ in range(steps):  # keeps(low) and not keeps(high) throughout
        middle = (low + high) / 2
        low, high = (middle, high) if keeps(middle) else (low, middle)
    return low


def prior_table(run: dict[str, Any], biases: list[float], shares: list[float] = (), content: str | None = None,
                content_weights: list[float] = (), keep_warm: float | None = None,
                save: str | None = None, warm_reference: dict[str, Any] | None = None) -> str:
    """One row per constant ``b`` of ``biases``, per mixture weight of ``shares`` and per pair of a weight of the
    content similarity (from the features in ``content``) and a ``b``. With ``keep_warm``, the operating points
    below it: for each content weight (0 included) the ``largest_bias`` that keeps ``keep_warm`` x the valid warm
    recall@10 of ``warm_reference`` (a run of the same data at cold_item_ratio 0; default: this run) with the same
    content weight and no prior, all chosen on validation, and the one of them with the best valid cold-target
    recall@10; ``save`` writes that one as a result file (``operating_point_result``)."""
    model, data = rebuild(run)
    valid, test = scored(model, data.valid), scored(model, data.test)
    header = ["prior"] + [f"{split} {column}" for split in ("valid", "test")
                          for column in ("R@10", "cold R@10", "warm R@10", "cold share")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name: str, prior, splits, measured: list[dict[str, float]] = ()) -> str:
        """A table row of ``prior`` on each split; ``measured``: the metrics of the first splits, already known."""
        cells = [name]
        for i, split in enumerate(splits):
            m = measured[i] if i < len(measured) else with_prior(split, data.cold, prior)
            cells += [f"{m['all']:.4f}", f"{m['cold']:.4f}", f"{m['warm']:.4f}", f"{m['share']:.3f}"]
        return "| " + " | ".join(cells) + " |"

    lines += [row(f"b = {b:g}", constant_prior(b), (valid, test)) for b in biases]
    lines += [row(f"mixture {w:g}", mixture_prior(w), (valid, test)) for w in shares]
    if content_weights:
        similarity = content_similarity(run, data.train._dataset, content)
        content_splits = scored(similarity, data.valid), scored(similarity, data.test)

    def fused(splits, weight: float | None) -> tuple[list, ...]:
        """``splits`` (valid and test scores) plus ``weight`` x the content similarity's (None: as they are); one
        pair at a time, each as large as the scores."""
        if weight is None:
            return splits
        return tuple(with_content(split, by_content, weight) for split, by_content in zip(splits, content_splits))

    # the warm recall to keep: the reference's (default: this run's) with the same content weight and no prior
    reference = (valid, test) if warm_reference is None else reference_scores(warm_reference, run, valid, test)
    reference_name = "the run's own" if warm_reference is None else f"that of {warm_reference['model']} (ratio 0)"
    points, levels = [], []  # (valid cold R@10, valid R@10, row, content weight, b, reference levels) of each point
    for w in [None, *content_weights]:
        splits = fused((valid, test), w)
        plus = "" if w is None else f", + {w:g} x content"
        if w is not None:
            lines += [row(f"b = {b:g}{plus}", constant_prior(b), splits) for b in biases]
        if keep_warm is None:
            continue
        level = [with_prior(split, data.cold, constant_prior(0.0))["warm"] for split in fused(reference, w)]
        levels.append(f"{'alone' if w is None else f'+ {w:g} x content'} {level[0]:.4f} (test {level[1]:.4f})")
        bias = largest_bias(splits[0], data.cold, keep_warm * level[0])
        if bias is not None:
            chosen = with_prior(splits[0], data.cold, constant_prior(bias))
            points.append((chosen["cold"], chosen["all"],
                           row(f"b = {bias:.3f}{plus}", constant_prior(bias), splits, [chosen]), w, bias, level))
    if keep_warm is not None:
        lines += ["", f"Operating points, chosen on validation: for each content weight the largest b that keeps valid "
                  f"warm R@10 >= {keep_warm:g} x {reference_name} with the same content weight and no prior "
                  f"({'; '.join(levels)}); **bold**: the best valid cold R@10 of them.", "", *lines[:2]]
        best = max(points, key=lambda p: p[:2]) if points else None
        lines += [p[2].replace("| b", "| **b", 1).replace(" |", "** |", 1) if p is best else p[2] for p in points]
        if save and best:
            held_to = {"model": warm_reference["model"] if warm_reference else "itself", "valid": best[5][0],
                       "test": best[5][1]}
            write_result_file(operating_point_result(run, data, fused((valid, test), best[3]), best[3], best[4],
                                                     keep_warm, held_to), save)
            lines += ["", f"The bold point's result file: {save}."]
    lines += ["", f"Test cold-target users ({int(data.cold[torch.cat([t for _, t in test])].sum())}), only the "
              f"{int(data.cold.sum())} held-out items ranked: R@10 {among_cold_only(test, data.cold):.4f}.", ""]
    if hasattr(model, "item_codes"):
        lines += code_placement(model.item_codes.cpu(), data.cold, model.warm_items)
    return "\n".join(lines) + "\n"


def user_results(batches, loader, cold: torch.Tensor, prior, item_counts: torch.Tensor) -> UserResults:
    """The per-user results of ``batches`` (scored from ``loader``, in its order) under ``prior``."""
    ranks, top = ranked(batches, cold, prior)
    users = torch.cat([interaction[loader._dataset.uid_field] for interaction, *_ in loader])
    return UserResults.of_ids(loader._dataset, users, torch.cat([t for _, t in batches]), ranks, top, item_counts)


def operating_point_result(run: dict[str, Any], data, splits, weight: float | None, bias: float,
                           keep_warm: float, reference: dict[str, Any]) -> dict[str, Any]:
    """An operating point as a result of its own (the run's record, its metrics replaced), named alike for every
    seed so that ``compare.py --merge`` puts the seeds of one model's point in one row, with its cold-start section
    and per-user results for the paired tests; ``reference``: the warm recall it was held to."""
    prior = constant_prior(bias)
    valid, test = (user_results(split, loader, data.cold, prior, data.item_counts)
                   for split, loader in zip(splits, (data.valid, data.test)))
    metrics = per_user_metrics(run["test_result"])
    content = " + content" if weight else ""
    result = {**run, "model": f"{run['model']}{content}, held-out prior (warm >= {keep_warm:g}x)",
              "best_valid_result": {m: round(float(valid.metric(m).mean()), 4) for m in metrics},
              "test_result": {m: round(float(test.metric(m).mean()), 4) for m in metrics}, "per_user": test,
              "operating_point": {"content_weight": weight or 0.0, "bias": bias, "keep_warm": keep_warm,
                                  "of": run["model"], "warm_reference": reference},
              "score_fusion": None, "collaborative": None}
    add_cold_start(result, data, data.test._dataset)
    return result


def share(value: str) -> float:
    """A mixture weight from the command line: strictly between 0 and 1."""
    weight = float(value)
    if not 0 < weight < 1:
        raise argparse.ArgumentTypeError(f"{value}: a mixture weight is strictly between 0 and 1")
    return weight


@command_line("cold_prior")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="the result file of one cold-start run (run_cemg.py or compare.py output)")
    parser.add_argument("--biases", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--shares", type=share, nargs="*", default=[],
                        help="mixture weights of the held-out items (e.g. 0.05 0.1 0.2), each a row")
    parser.add_argument("--content", default=None, help="a text feature file (.npz) for the --content_weights rows")
    parser.add_argument("--content_weights", type=float, nargs="*", default=[],
                        help="weights of the content similarity added to the run's score, each a row")
    parser.add_argument("--keep_warm", type=float, default=None,
                        help="also add the operating points: per content weight the largest b keeping this share of "
                             "the reference's valid warm R@10 with that weight (e.g. 0.95, issue 17's target), the "
                             "best valid cold R@10 of them in bold")
    parser.add_argument("--save", default=None,
                        help="with --keep_warm: write the bold operating point as a result file (.json, its per-user "
                             "results beside it) that compare.py --merge tabulates over seeds with paired tests")
    parser.add_argument("--warm_reference", default=None,
                        help="with --keep_warm: the result file of the same model at cold_item_ratio 0, whose warm "
                             "recall (with the same content weight) the operating points keep; default: this run's")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    if args.content_weights and not args.content:
        parser.error("--content_weights needs --content, the text feature file to score the items by")
    if (args.save or args.warm_reference) and args.keep_warm is None:
        parser.error("--save and --warm_reference are about the operating points of --keep_warm: give it too")
    table = prior_table(load_run(args.result), args.biases, args.shares, args.content, args.content_weights,
                        args.keep_warm, args.save, args.warm_reference and load_run(args.warm_reference))
    print_table(table, args.output)


if __name__ == "__main__":
    main()
