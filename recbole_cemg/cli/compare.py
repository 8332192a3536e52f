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

from recbole_cemg.compare import (check_variants, compare_models, literal_value, load_runs, markdown_table, parse_variant,
                                  split_models, summarise, write_outputs)
from recbole_cemg.errors import InputError, add_debug_flag, command_line


@command_line("compare")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merge", nargs="*", default=None,
                        help="instead of running: merge earlier results into --output: comparison outputs (their "
                             "prefix or .json) or result files of single runs (run_cemg.py --result_file)")
    parser.add_argument("--dataset")
    parser.add_argument("--data_path")
    parser.add_argument("--feature_path", default=None)
    parser.add_argument("--models", default="SASRec,GRU4Rec,CEMG")
    parser.add_argument("--output", required=True, help="prefix of the result files")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--own_collab", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every model")
    parser.add_argument("--cemg_set", nargs="*", default=[], help="key=value overrides for CEMG only")
    add_debug_flag(parser)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's arguments
    if args.merge is not None:
        report([row for path in args.merge for row in load_runs(path)], args.output)
        return

    def parse(pairs: list[str]) -> dict:
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            raise InputError(f"--set / --cemg_set: '{bad[0]}' is not key=value.")
        return {key: literal_value(value) for key, value in (pair.split("=", 1) for pair in pairs)}

    common = {"data_path": args.data_path, **parse(args.set)}
    if args.feature_path:
        common["feature_path"] = args.feature_path
    config_files = args.config_files.split() if args.config_files else None
    check_variants(split_models(args.models), args.dataset, config_files, common)
    rows = []
    for model in split_models(args.models):
        overrides = dict(common)
        if parse_variant(model)[0] == "CEMG":  # CEMG and its variants, e.g. CEMG[fusion=concat]
            overrides.update(parse(args.cemg_set))
            sasrec = next((r for r in rows if r["model"] == "SASRec" and "error" not in r), None)
            if sasrec and not args.own_collab and "collab_source" not in overrides:
                overrides["collab_source"] = sasrec["checkpoint"]
        rows += compare_models([model], args.dataset, config_files, overrides)
        report(rows, args.output)  # after every model, so a run cut short keeps what it finished


def report(rows: list[dict], output: str) -> None:
    summary = summarise(rows)
    print(markdown_table(summary))
    print("machine:", next((e["machine"] for e in summary if "machine" in e), {}))
    print("written:", ", ".join(write_outputs(rows, summary, output)))


if __name__ == "__main__":
    main()
