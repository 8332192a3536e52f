"""Tokenizer report: how CEMG's item codes come out under the fusion ablations, on one dataset.

Stages 1-3 of a CEMG run (collaborative embeddings, fusion, RQ-VAE + de-duplication level) for each variant, with
the same collaborative embeddings for all of them (trained once, or read from ``--collab_source``), and the
diagnostics of the result file: collision rate before de-duplication, the largest group of items sharing a tuple,
per-level code usage and entropy, reconstruction error, mean fusion weights. Downstream Recall/NDCG needs the
generator and is measured by full runs (benchmarks/gpu_beauty.sh).

    python benchmarks/tokenizer_report.py --dataset=Beauty --data_path=.devrun/data \\
        --feature_path=.devrun/data/Beauty --output=benchmarks/results/beauty-tokenizer

Further ``--key=value`` arguments override the config, as in run_cemg.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

from recbole_cemg.config import Config  # noqa: E402
from recbole_cemg.data.features import save_item_features  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402
from recbole_cemg.model.cemg import CEMG  # noqa: E402
from recbole_cemg.quick_start import machine_description  # noqa: E402
from recbole_cemg.trainer import CEMGTrainer  # noqa: E402

VARIANTS = {
    "guided (default)": {},
    "guided, guidance off": {"fusion_guidance": False},
    "concat": {"fusion": "concat"},
    "mean": {"fusion": "mean"},
    "text only": {"collab_in_fusion": False},
    "collaborative only": {"modalities": [], "collab_in_fusion": True},
}


def tokenize(config, train_data, valid_data) -> tuple[CEMG, float]:
    """Stages 1-3 of a CEMG run; returns the model (with its codes and report) and the seconds taken."""
    init_seed(config["seed"], config["reproducibility"])
    model = CEMG(config, train_data._dataset).to(config["device"])
    trainer = CEMGTrainer(config, model)
    start = time.perf_counter()
    trainer.fit_collaborative(train_data, valid_data, show_progress=config["show_progress"])
    model.fit_tokenizer(show_progress=config["show_progress"])
    return model, time.perf_counter() - start


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | collision rate | max items / tuple | usage per level | entropy per level (bits) | "
             "reconstruction | fusion weights | seconds |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["report"]
        weights = ", ".join(f"{k} {v:.2f}" for k, v in r["modality_weights"].items())
        lines.append(f"| {row['variant']} | {r['collision_rate']:.4f} | {r['max_items_per_tuple']} | "
                     f"{' / '.join(f'{u:.2f}' for u in r['usage'])} | "
                     f"{' / '.join(f'{e:.2f}' for e in r['entropy_bits'])} | {r['reconstruction_error']:.4f} | "
                     f"{weights} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--output", required=True, help="prefix of the .json and .md outputs")
    args, _ = parser.parse_known_args()
    files = args.config_files.split() if args.config_files else None

    base = Config("CEMG", args.dataset, files)
    init_logger(base)
    dataset = create_dataset(base)
    train_data, valid_data, _ = data_preparation(base, dataset)
    collab_file = base["collab_source"]
    rows = []
    for name, overrides in VARIANTS.items():
        config = Config("CEMG", args.dataset, files, dict(overrides, collab_source=collab_file))
        model, seconds = tokenize(config, train_data, valid_data)
        if not collab_file.endswith(".npz"):  # the first variant trained it: every other one reuses it
            collab_file = os.path.join(config["checkpoint_dir"], f"{args.dataset}-tokenizer-report.collab.npz")
            save_item_features(collab_file, model.item_tokens[1:], model.collab_embeddings[1:].cpu().numpy(),
                               encoder=f"collab:{config['collab_source']}")
        rows.append({"variant": name, "overrides": overrides, "seconds": round(seconds, 1),
                     "report": asdict(model.tokenizer_report)})
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        write_outputs(args.output, base, model.level_sizes, rows)  # after every variant: a cut-off run keeps its rows
    print(markdown(rows))


def write_outputs(prefix: str, config, level_sizes: list[int], rows: list[dict]) -> None:
    result = {"dataset": config["dataset"], "command": " ".join(sys.argv), "machine": machine_description(config["device"]),
              "levels": level_sizes, "collab_source": config["collab_source"], "rows": rows}
    with atomic_write(f"{prefix}.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with atomic_write(f"{prefix}.md", "w", encoding="utf-8") as f:
        f.write(f"Command: `python {result['command']}`\n\nMachine: {result['machine']}\n\n{markdown(rows)}\n")

if __name__ == "__main__":
    main()
