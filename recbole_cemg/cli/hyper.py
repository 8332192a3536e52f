"""Hyper-parameter search with RecBole's HyperTuning (hyperopt) and the plugin's objective function: ``cemg-hyper``
once installed, or ``python run_hyper.py`` in a checkout (the same options).

    cemg-hyper --model=CEMG --dataset=ml-100k --params_file=hyper/cemg.hyper \
        --output_file=results/hyper-cemg --algo=random --max_evals=20

Works for CEMG and any RecBole model. Each trial is a full training run scored on the valid metric. Writes
``<output_file>`` (RecBole's text report), ``<output_file>.json`` (every trial's parameters and results) and
``<output_file>.best.json`` (the best parameters). Further ``--key=value`` arguments override config values.
"""

from __future__ import annotations

import argparse
import json

from recbole.trainer import HyperTuning

from recbole_cemg.config import known_keys, read_config_file
from recbole_cemg.errors import add_debug_flag, command_line
from recbole_cemg.io import atomic_write
from recbole_cemg.quick_start import objective_function
from recbole_cemg.search_space import check_params_file, check_searched_keys

ALGORITHMS = ("exhaustive", "random", "bayes")


@command_line("run_hyper")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", default=None, help="fixed config files, separated by spaces")
    parser.add_argument("--params_file", required=True, help="search space, RecBole's .hyper format")
    parser.add_argument("--output_file", default="hyper_result", help="prefix of the result files")
    parser.add_argument("--algo", default="exhaustive", choices=ALGORITHMS)
    parser.add_argument("--max_evals", type=int, default=10, help="trials for random / bayes")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without gain")
    add_debug_flag(parser)
    args, _ = parser.parse_known_args()
    config_files = args.config_files.split() if args.config_files else None
    searched = check_params_file(args.params_file)
    for file in config_files or []:
        read_config_file(file)
    check_searched_keys(args.params_file, searched, known_keys(None, None, config_files))
    tuner = HyperTuning(objective_function, algo=args.algo, early_stop=args.early_stop, max_evals=args.max_evals,
                        params_file=args.params_file,
                        fixed_config_file_list=args.config_files.split() if args.config_files else None)
    tuner.run()
    tuner.export_result(output_file=args.output_file)
    with atomic_write(f"{args.output_file}.json", "w", encoding="utf-8") as f:
        json.dump({"algo": args.algo, "trials": [{"params": params, **result}
                                                   for params, result in tuner.params2result.items()]},
                  f, indent=2, default=str)
    with atomic_write(f"{args.output_file}.best.json", "w", encoding="utf-8") as f:
        json.dump({"best_params": tuner.best_params, "best_valid_score": tuner.best_score,
                   "test_result": tuner.params2result[tuner.params2str(tuner.best_params)]["test_result"]},
                  f, indent=2, default=str)
    print("best params:", tuner.best_params)
    print("best test result:", tuner.params2result[tuner.params2str(tuner.best_params)]["test_result"])


if __name__ == "__main__":
    main()
