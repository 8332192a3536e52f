"""Side-by-side benchmark: RecBole baselines and CEMG on one data set, same split and protocol, one process:
``cemg-compare`` once installed, or ``python benchmarks/compare.py`` in a checkout (the same options).

    cemg-compare --dataset=Beauty --data_path=../shared/data/amazon14_beauty_sports_toys \
        --feature_path=.devrun/beauty --models=SASRec,CEMG --output=benchmarks/results/beauty-h100

To save a second SASRec training, CEMG reads its collaborative embeddings from the SASRec run of the same
benchmark (``collab_source`` = that run's checkpoint, trained on the training split only) when both are listed;
pass --own_collab to let CEMG train its own.
Prints a markdown table and writes .json/.csv/.md/.png with the machine recorded.
"""

from __future__ import annotations

import argparse
import sys

from recbole_cemg.compare import (baseline_ensembles, compare, literal_value, merge_runs, report, split_models,
                                  stop_if_any_failed)
from recbole_cemg.errors import InputError, add_debug_flag, command_line

# The models a comparison runs when --models is not given.
DEFAULT_MODELS = "SASRec,GRU4Rec,CEMG"


@command_line("compare")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merge", nargs="*", default=None,
                        help="instead of running: merge earlier results into --output: comparison outputs (their "
                             "prefix or .json) or result files of single runs (run_cemg.py --result_file)")
    parser.add_argument("--group", nargs="+", action="append", default=[], metavar=("ROW", "MODEL"),
                        help="with --merge: the runs of these models form one row named ROW, e.g. one treatment whose "
                             "runs differ only in a key such as tokenizer_path (repeatable)")
    parser.add_argument("--ensembles", action="store_true",
                        help="with --merge: also build the baseline ensembles (B + B) from the merged runs' checkpoints")
    parser.add_argument("--dataset")
    parser.add_argument("--data_path")
    parser.add_argument("--feature_path", default=None)
    parser.add_argument("--models", default=None,
                        help=f"comma-separated models and variants to run (default {DEFAULT_MODELS}); with --merge: "
                             "the rows to keep of the merged files (e.g. a table's reference row, not its other runs)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: every model runs once per seed")
    parser.add_argument("--reference", default=None,
                        help="row that every other row is tested against (default: the first baseline)")
    parser.add_argument("--output", required=True, help="prefix of the result files")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--own_collab", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every model")
    parser.add_argument("--cemg_set", nargs="*", default=[], help="key=value overrides for CEMG only")
    add_debug_flag(parser)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's arguments

    def parse(pairs: list[str]) -> dict:
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            raise InputError(f"--set / --cemg_set: '{bad[0]}' is not key=value.")
        return {key: literal_value(value) for key, value in (pair.split("=", 1) for pair in pairs)}

    given = {"data_path": args.data_path, "feature_path": args.feature_path}
    common = {**{key: value for key, value in given.items() if value}, **parse(args.set)}
    config_files = args.config_files.split() if args.config_files else None
    if args.merge is not None:
        rows = group_rows(merge_runs(args.merge), args.group)
        if args.models:
            rows = keep_models(rows, split_models(args.models))
        if args.ensembles:
            rows += baseline_ensembles(rows, rows[0]["dataset"], config_files, common)
        report(rows, args.output, args.reference)
    else:
        rows = compare(split_models(args.models or DEFAULT_MODELS), args.dataset, config_files, common,
                       parse(args.cemg_set), parse_seeds(args.seeds), reuse_collab=not args.own_collab, output=args.output,
                       reference=args.reference)
    stop_if_any_failed(rows, "compare")


def keep_models(rows: list[dict], models: list[str], option: str = "--models") -> list[dict]:
    """The merged runs of ``models`` (row names as the table prints them, variants spelled out); a name that no run
    has is a user error, not an empty row."""
    missing = [m for m in models if not any(r["model"] == m for r in rows)]
    if missing:
        raise InputError(f"{option}: no merged run is named {', '.join(map(repr, missing))}; the runs are "
                         f"{', '.join(sorted({repr(r['model']) for r in rows}))}.")
    return [r for r in rows if r["model"] in models]


def group_rows(rows: list[dict], groups: list[list[str]]) -> list[dict]:
    """The merged runs with each ``--group``'s models relabelled as its row, so that the table's statistics (mean over
    runs, each user's mean in the paired test) treat them as one row; a group without models, or naming a model no run
    has, is a user error."""
    row_of = {}
    for row, *models in groups:
        if not models:
            raise InputError(f"--group {row}: name the models whose runs form this row after it.")
        keep_models(rows, models, f"--group {row}")
        row_of.update(dict.fromkeys(models, row))
    return [{**r, "model": row_of.get(r["model"], r["model"])} for r in rows]


def parse_seeds(seeds: str | None) -> list[int] | None:
    """``"2020,2021"`` -> ``[2020, 2021]``; a seed that is not an integer is a user error."""
    if not seeds:
        return None
    try:
        return [int(seed) for seed in seeds.split(",")]
    except ValueError:
        raise InputError(f"--seeds={seeds}: give comma-separated integers, e.g. --seeds=2020,2021,2022.") from None


if __name__ == "__main__":
    main()
