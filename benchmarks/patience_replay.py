"""Replay early stopping on the validation curves of finished CEMG runs: where would a smaller patience have stopped,
and which epoch (with which valid score) would it have kept?

Training is deterministic for a seed, so a run with patience P has the same curve as a run with any patience p < P up
to the epoch where p stops; replaying its log answers "what would patience p have given" without rerunning.

    python benchmarks/patience_replay.py saved.log --patience 3 8
"""

from __future__ import annotations

import argparse
import re

EVALUATION = re.compile(r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]")


def generator_curves(log: str) -> list[list[float]]:
    """The generator's valid score per evaluated epoch, one list per CEMG run in the log."""
    runs = log.split("CEMG stage: generator")[1:]
    return [[float(score) for _, score in EVALUATION.findall(run.split("CEMG stage: collaborative")[0])]
            for run in runs]


def replay(curve: list[float], patience: int) -> tuple[int, int, float]:
    """RecBole's early stopping (stop once ``patience`` evaluations in a row bring no improvement) on ``curve``:
    the epoch it stops at, the best epoch it keeps, and that epoch's valid score."""
    best, best_epoch, waited = float("-inf"), -1, 0
    for epoch, score in enumerate(curve):
        if score >= best:  # RecBole counts a tie as an improvement
            best, best_epoch, waited = score, epoch, 0
        else:
            waited += 1
            if waited > patience:
                return epoch, best_epoch, best
    return len(curve) - 1, best_epoch, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="log files of CEMG runs (RecBole's log, or the command's output)")
    parser.add_argument("--patience", type=int, nargs="+", default=[3, 8])
    args = parser.parse_args()
    print("| run | " + " | ".join(f"patience {p}: stop / best epoch (valid)" for p in args.patience) + " |")
    print("|---" * (len(args.patience) + 1) + "|")
    for path in args.logs:
        with open(path, encoding="utf-8") as f:
            curves = generator_curves(f.read())
        for i, curve in enumerate(curves):
            cells = []
            for patience in args.patience:
                stop, best_epoch, best = replay(curve, patience)
                cells.append(f"{stop} / {best_epoch} ({best:.4f})")
            print(f"| {path} #{i + 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
