"""What a run's item codes know of its collaborative embeddings, for rare items most of all.

The items generator scores an item only through its code tuple, so what it can tell about a rare item is what the
item's codes share with items it has trained on. This fits a ridge regression from each item's codes (one-hot, every
level but the de-duplication one) to its collaborative embedding, on the items seen at least ``--min_count`` times
in training, and reports R^2 on those (fitted) and on the rarer ones (out of sample: how much of a rare item's
collaborative embedding its codes carry). Beside the run's codes, the same probe of codes from residual k-means on
the unit-normalised collaborative embeddings with as many levels and codes (what a code tuple of that size can carry
when it codes the collaborative embedding alone). No training of the generator; a few minutes on one core.

    python benchmarks/code_probe.py benchmarks/results/beauty-cpu/ablations/codes8x256-2020.json \
        --output benchmarks/results/beauty-cpu/ablations/code-probe-codes8x256-2020.md

The run's checkpoint must still exist where its result file says, with the ``.codes.json`` and ``.collab.npz`` files
the run wrote beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.compare import load_run, print_table, run_config  # noqa: E402
from recbole_cemg.data.features import load_item_features  # noqa: E402
from recbole_cemg.errors import InputError, command_line  # noqa: E402
from recbole_cemg.evaluation import training_item_counts  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402
from recbole_cemg.model.rqvae import kmeans  # noqa: E402
from recbole_cemg.model.tokenizer import deduplicate  # noqa: E402
from recbole_cemg.quick_start import prepare_data  # noqa: E402
from recbole_cemg.significance import POPULARITY_BUCKETS  # noqa: E402


def one_hot(codes: torch.Tensor, size: int) -> torch.Tensor:
    """``[items, levels]`` codes -> ``[items, levels * size]`` indicators, one block per level."""
    offsets = torch.arange(codes.shape[1]) * size
    rows = torch.zeros(len(codes), codes.shape[1] * size, dtype=torch.float64)
    return rows.scatter_(1, codes + offsets, 1.0)


def probe_r2(codes: torch.Tensor, size: int, embeddings: torch.Tensor, fitted: torch.Tensor,
             groups: dict[str, torch.Tensor], ridge: float = 3.0) -> dict[str, float]:
    """R^2 of a ridge regression codes -> embeddings fitted on the ``fitted`` items, on each group of items."""
    x, y = one_hot(codes, size), embeddings.double() - embeddings.double()[fitted].mean(0)
    gram = x[fitted].T @ x[fitted] + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    residual = y - x @ torch.linalg.solve(gram, x[fitted].T @ y[fitted])
    return {name: float(1 - residual[m].pow(2).sum() / y[m].pow(2).sum()) for name, m in groups.items()}


def residual_kmeans(x: torch.Tensor, levels: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[items, levels]`` of residual k-means (level l clusters what levels < l left over) and the norm of
    what the last level left (the de-duplication level's order, as the tokenizer's)."""
    generator, residual, codes = torch.Generator().manual_seed(seed), x.clone(), []
    for _ in range(levels):
        centroids = kmeans(residual, size, generator=generator)
        nearest = torch.cdist(residual, centroids).argmin(dim=1)
        codes.append(nearest)
        residual = residual - centroids[nearest]
    return torch.stack(codes, dim=1), residual.norm(dim=1)


def run_files(run: dict[str, Any]) -> tuple[str, str]:
    """The codes and collaborative-embedding files written beside the run's checkpoint."""
    stem = os.path.splitext(run.get("checkpoint") or "")[0]
    files = f"{stem}.codes.json", f"{stem}.collab.npz"
    missing = [f for f in files if not os.path.isfile(f)]
    if not run.get("checkpoint") or missing:
        raise InputError(f"run '{run['model']}': {missing or 'its checkpoint'} not found; rerun it (CEMG writes "
                         "both beside its checkpoint).")
    return files


def probe_table(run: dict[str, Any], min_count: int = 5, write_codes: str | None = None) -> str:
    """The probe's table; ``write_codes``: also write the residual k-means codes (+ a de-duplication level) as a
    codes file another run of the same data reads with ``tokenizer_path``."""
    codes_file, collab_file = run_files(run)
    with open(codes_file, encoding="utf-8") as f:
        table = json.load(f)
    collab = load_item_features(collab_file)
    size = max(table["level_sizes"][:-1])
    codes = torch.tensor([table["codes"][str(t)][:-1] for t in collab.item_tokens])  # no de-duplication level
    embeddings = torch.as_tensor(collab.features, dtype=torch.float64)
    dataset = prepare_data(run_config(run)).train._dataset
    counts_by_id = training_item_counts(dataset)
    counts = torch.stack([counts_by_id[dataset.token2id(dataset.iid_field, str(t))] for t in collab.item_tokens])
    fitted = counts >= min_count
    buckets = {label: (counts >= low) & (counts <= high) for label, low, high in POPULARITY_BUCKETS}
    groups = {"fitted": fitted, f"rare (< {min_count})": ~fitted, **{k: m for k, m in buckets.items() if m.any()}}
    unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1e-12)
    clustered, residual = residual_kmeans(unit.float(), codes.shape[1], size)
    rows = {"the run's codes": probe_r2(codes, size, embeddings, fitted, groups),
            f"residual k-means of the embeddings, {codes.shape[1]} x {size}":
                probe_r2(clustered, size, embeddings, fitted, groups)}
    if write_codes:
        unique = deduplicate(clustered, residual, table["level_sizes"][-1])
        with atomic_write(write_codes, "w", encoding="utf-8") as f:
            json.dump({"run": table["run"], "level_sizes": table["level_sizes"],
                       "codes": {str(t): row for t, row in zip(collab.item_tokens, unique.tolist())}}, f)
    lines = [f"R^2 of the collaborative embedding from the codes, fitted on the {int(fitted.sum())} items with at "
             f"least {min_count} training interactions ({run['model']}, {codes_file}):", "",
             "| codes | " + " | ".join(f"{name} ({int(m.sum())})" for name, m in groups.items()) + " |",
             "|---|" + "---|" * len(groups)]
    lines += [f"| {name} | " + " | ".join(f"{r[g]:.3f}" for g in groups) + " |" for name, r in rows.items()]
    return "\n".join(lines) + "\n"


@command_line("code_probe")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="the result file of one CEMG run (run_cemg.py or compare.py output)")
    parser.add_argument("--min_count", type=int, default=5, help="fit on items with at least this many interactions")
    parser.add_argument("--write_codes", default=None,
                        help="also write the residual k-means codes to this .codes.json (a tokenizer_path)")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    print_table(probe_table(load_run(args.result), args.min_count, args.write_codes), args.output)


if __name__ == "__main__":
    main()
