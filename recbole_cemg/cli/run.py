"""Train and evaluate CEMG (or any RecBole model) with RecBole's protocol: ``cemg-run`` once installed, or
``python run_cemg.py`` in a checkout (the same options).

    cemg-run --dataset=ml-100k
    cemg-run --model=SASRec --dataset=ml-100k --result_file=results/sasrec.json
    cemg-run --dataset=ml-100k --config_files="my.yaml other.yaml" --num_beams=30
    cemg-run --dataset=ml-100k --compare=SASRec,GRU4Rec,CEMG --seeds=2020,2021 --output=results/ml-100k
    cemg-run --dataset=ml-100k --compare="CEMG,CEMG[fusion=concat],CEMG[modalities=[]]" --output=ablation
    cemg-run --dataset=ml-100k --nproc=2                  # data-parallel over 2 GPUs (or CPU processes)
    cemg-run --dataset=ml-100k --resume=saved/CEMG-<time>-<suffix>.pth   # continue an interrupted run

Any further ``--key=value`` overrides a config value, as with RecBole's own run script.
"""

from __future__ import annotations

import argparse

from recbole_cemg.cli.compare import parse_seeds
from recbole_cemg.compare import compare, split_models, stop_if_any_failed
from recbole_cemg.errors import InputError, add_debug_flag, command_line
from recbole_cemg.evaluation import write_result_file
from recbole_cemg.quick_start import run


@command_line("run_cemg")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="CEMG", help="CEMG or any RecBole model name (SASRec, GRU4Rec ...)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (ml-100k ships with RecBole)")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--result_file", default=None, help="write the results as one JSON object to this path "
                        "(per-user test results beside it: <result>.users.tsv.gz)")
    parser.add_argument("--compare", default=None, help="comma-separated models (or variants such as "
                        "CEMG[fusion=concat]) to train and tabulate one by one")
    parser.add_argument("--seeds", default=None, help="with --compare: comma-separated seeds to repeat each model")
    parser.add_argument("--output", default=None, help="with --compare: prefix of the .json/.csv/.md/.png outputs")
    parser.add_argument("--reference", default=None, help="with --compare: the row every other row is tested "
                        "against (default: the first baseline)")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (one per GPU)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the machine with rank 0")
    parser.add_argument("--port", default="5678", help="free port on the machine with rank 0")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    add_debug_flag(parser)
    args, _ = parser.parse_known_args()
    config_files = args.config_files.split() if args.config_files else None
    if args.nproc < 1:
        raise InputError(f"--nproc={args.nproc}: give the number of processes to run on this machine, at least 1.")
    if args.compare:
        # each model exactly as its own single run (CEMG trains its own stage 1; cemg-compare can reuse SASRec's)
        rows = compare(split_models(args.compare), args.dataset, config_files, seeds=parse_seeds(args.seeds),
                       reuse_collab=False, output=args.output, reference=args.reference)
        stop_if_any_failed(rows, "run_cemg")
        return
    result = run(args.model, args.dataset, config_files, nproc=args.nproc, world_size=args.world_size, ip=args.ip,
                 port=args.port, group_offset=args.group_offset)
    if args.result_file and result is not None:
        write_result_file(result, args.result_file)


if __name__ == "__main__":
    main()
