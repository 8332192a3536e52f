"""Train several models on the same data, split and protocol, one after another, and tabulate them.

A model that fails is reported in the table with its error and does not stop the others. An entry may also be a
configuration variant, ``Model[key=value;key=value]`` (values are Python literals), so that ablations sit in the same
table as the baselines: ``CEMG[fusion=concat]``, ``CEMG[modalities=[];collab_in_fusion=True]``.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import statistics
import traceback
from logging import getLogger
from typing import Any

from recbole_cemg.config import known_keys, read_config_file
from recbole_cemg.errors import InputError, MissingFileError, UserError
from recbole_cemg.io import atomic_write
from recbole_cemg.quick_start import run_cemg

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# Test users whose target item was held out of training (cold_item_ratio), when the runs have them.
COLD_METRICS = ("recall@10", "ndcg@10")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"CEMG[fusion=concat;modalities=[]]"`` -> ``("CEMG", {"fusion": "concat", "modalities": []})``."""
    name, bracket, rest = spec.partition("[")
    overrides: dict[str, Any] = {}
    if bracket and not rest.endswith("]"):
        raise InputError(f"Model variant '{spec}' must end with ']': write Model[key=value;key=value].")
    for item in filter(None, (part.strip() for part in rest[:-1].split(";"))):
        key, equals, value = item.partition("=")
        if not equals:
            raise InputError(f"Model variant '{spec}': '{item}' is not key=value.")
        overrides[key.strip()] = literal_value(value.strip())
    return name.strip(), overrides


def literal_value(value: str) -> Any:
    """A Python literal; a bare word (concat) stays a string, a list of bare words ([text,image]) a list of them."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if value.startswith("[") and value.endswith("]"):
            return [literal_value(v.strip()) for v in value[1:-1].split(",") if v.strip()]
        return value


def split_models(specs: str) -> list[str]:
    """Split a comma-separated model list, keeping the commas inside a variant's brackets."""
    return [s.strip() for s in re.split(r",(?![^\[]*\])", specs) if s.strip()]


def check_variants(models: list[str], dataset: str, config_file_list: list[str] | None = None,
                   config_dict: dict[str, Any] | None = None) -> None:
    """Stop before any training at a malformed variant or at a variant key that no config of its model knows
    (a typo would tabulate the plain model as an ablation)."""
    for model in models:
        name, variant = parse_variant(model)
        unknown = sorted(set(variant) - known_keys(name, dataset, config_file_list, config_dict)) if variant else []
        if unknown:
            raise InputError(f"Model variant '{model}': '{unknown[0]}' is not a config key of {name}. Fix its name "
                             "(keys are case-sensitive; CEMG's are listed in properties/model/CEMG.yaml).")


def compare_models(models: list[str], dataset: str, config_file_list: list[str] | None = None,
                   config_dict: dict[str, Any] | None = None, seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One result row per model (or variant, see ``parse_variant``) and seed: run_cemg's result, or
    ``{"error": ...}`` if the run failed. ``row["model"]`` is the entry as given. The config files are shared by
    all runs: a missing or malformed one, or a variant key no config knows, stops the comparison at once."""
    for file in config_file_list or []:
        read_config_file(file)
    check_variants(models, dataset, config_file_list, config_dict)
    rows = []
    for model in models:
        for seed in seeds or [None]:
            try:
                name, variant = parse_variant(model)
                overrides = dict(config_dict or {}, **variant)
                if seed is not None:
                    overrides["seed"] = seed
                result = run_cemg(name, dataset, config_file_list, overrides)
                rows.append({**result, "model": model, "seed": seed})
            except Exception as error:  # noqa: BLE001 - one failing model must not take down the comparison
                details = "" if isinstance(error, UserError) else f"\n{traceback.format_exc()}"
                getLogger().error(f"{model} failed: {error}{details}")
                rows.append({"model": model, "seed": seed, "error": f"{type(error).__name__}: {error}"})
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each model's test metrics, valid NDCG@10 and seconds."""
    summary = []
    rows = rows + [fusion_row(r) for r in rows if r.get("score_fusion")]
    for model in dict.fromkeys(r["model"] for r in rows):
        runs = [r for r in rows if r["model"] == model]
        ok = [r for r in runs if "error" not in r]
        entry: dict[str, Any] = {"model": model, "runs": len(runs), "failed": len(runs) - len(ok)}
        if not ok:
            entry["error"] = runs[0]["error"]
            summary.append(entry)
            continue
        values = {f"test {m}": [float(r["test_result"][m]) for r in ok] for m in METRICS}
        values["valid ndcg@10"] = [float(r["best_valid_result"]["ndcg@10"]) for r in ok]
        if all(r.get("cold_start", {}).get("test_result") for r in ok):  # run with cold_item_ratio > 0
            for m in COLD_METRICS:
                values[f"cold {m}"] = [float(r["cold_start"]["test_result"][m]) for r in ok]
        values["train s"] = [float(r["seconds"]["train"]) for r in ok]
        values["test s"] = [float(r["seconds"]["test"]) for r in ok]
        for key, series in values.items():
            entry[key] = statistics.fmean(series)
            entry[f"{key} std"] = statistics.stdev(series) if len(series) > 1 else 0.0
        entry["parameters"] = ok[0]["parameters"]
        entry["machine"] = ok[0]["machine"]
        summary.append(entry)
    return summary


def load_runs(path: str) -> list[dict[str, Any]]:
    """The runs of a comparison output (``prefix`` or ``prefix.json``) or of one run's result file."""
    path = path if path.endswith(".json") else f"{path}.json"
    if not os.path.isfile(path):
        raise MissingFileError(f"--merge: no file {path}; give result files or the --output prefix of an earlier "
                               "comparison.")
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    return content["runs"] if "runs" in content else [content]


def fusion_row(row: dict[str, Any]) -> dict[str, Any]:
    """A score-fusion result as a row of its own, beside the pure generative row of the same run."""
    fusion = row["score_fusion"]
    return {**row, "model": f"{row['model']} + collab score", "best_valid_result": fusion["best_valid_result"],
            "test_result": fusion["test_result"]}


def markdown_table(summary: list[dict[str, Any]]) -> str:
    cold = [f"cold {m}" for m in COLD_METRICS if any(f"cold {m}" in e for e in summary)]
    columns = [f"test {m}" for m in METRICS] + ["valid ndcg@10"] + cold + ["train s", "test s"]
    lines = ["| model | " + " | ".join(columns) + " | parameters |",
             "|---" * (len(columns) + 2) + "|"]
    for entry in summary:
        if "error" in entry:
            lines.append(f"| {entry['model']} | failed: {entry['error'][:120]} |" + " |" * len(columns))
            continue
        cells = []
        for column in columns:
            if column not in entry:
                cells.append("-")
                continue
            digits = 1 if column.endswith(" s") else 4
            cell = f"{entry[column]:.{digits}f}"
            if entry["runs"] > 1:
                cell += f" ± {entry[column + ' std']:.{digits}f}"
            cells.append(cell)
        lines.append(f"| {entry['model']} | " + " | ".join(cells) + f" | {entry['parameters']:,} |")
    return "\n".join(lines)


def write_outputs(rows: list[dict[str, Any]], summary: list[dict[str, Any]], prefix: str) -> list[str]:
    """``prefix``.json (every run), .csv and .md (the summary), .png (bar chart of test metrics)."""
    paths = [f"{prefix}.json", f"{prefix}.csv", f"{prefix}.md", f"{prefix}.png"]
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with atomic_write(paths[0], "w", encoding="utf-8") as f:
        json.dump({"runs": rows, "summary": summary}, f, indent=2, default=str)
    keys = sorted({k for entry in summary for k in entry if k != "machine"}, key=lambda k: (k != "model", k))
    with atomic_write(paths[1], "w", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary)
    machine = next((e["machine"] for e in summary if "machine" in e), {})
    with atomic_write(paths[2], "w", encoding="utf-8") as f:
        f.write(markdown_table(summary) + "\n\nMachine: " + json.dumps(machine) + "\n")
    _bar_chart(summary, paths[3])
    return paths


def _bar_chart(summary: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [e for e in summary if "error" not in e]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(METRICS), 3.2))
    width = 0.8 / max(len(ok), 1)
    for i, entry in enumerate(ok):
        xs = [j + i * width for j in range(len(METRICS))]
        ax.bar(xs, [entry[f"test {m}"] for m in METRICS], width, yerr=[entry[f"test {m} std"] for m in METRICS],
               label=entry["model"])
    ax.set_xticks([j + width * (len(ok) - 1) / 2 for j in range(len(METRICS))], METRICS)
    ax.set_ylabel("test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
