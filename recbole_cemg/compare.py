"""Train several models on the same data, split and protocol, one after another, and tabulate them.

A model that fails is reported in the table with its error and does not stop the others; the command then exits
with status 1 (``stop_if_any_failed``). An entry may also be a
configuration variant, ``Model[key=value;key=value]`` (values are Python literals), so that ablations sit in the same
table as the baselines: ``CEMG[fusion=concat]``, ``CEMG[modalities=[];collab_in_fusion=True]``.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import statistics
import traceback
from logging import getLogger
from typing import Any, Callable

import torch

from recbole_cemg.checkpoints import read_checkpoint
from recbole_cemg.config import Config, known_keys, read_config_file
from recbole_cemg.errors import InputError, MissingFileError, UserError
from recbole_cemg.evaluation import (UserResults, mask_history, read_user_results, store_user_results,
                                     stored_user_files, target_ranks)
from recbole_cemg.io import atomic_write
from recbole_cemg.quick_start import PreparedData, prepare_data, run_cemg, run_score_ensemble
from recbole_cemg.schema import schema
from recbole_cemg.significance import POPULARITY_BUCKETS, paired_difference, popularity_breakdown
from recbole_cemg.utils import get_model

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# Test users whose target item was held out of training (cold_item_ratio), when the runs have them.
COLD_METRICS = ("recall@10", "ndcg@10")
# Compared user by user against the reference row, and broken down by the target's popularity.
PAIRED_METRICS = ("ndcg@10", "recall@10")


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
            name, variant = parse_variant(model)
            overrides = dict(config_dict or {}, **variant)
            if seed is not None:
                overrides["seed"] = seed
            rows.append(guarded_run(model, seed, lambda: run_cemg(name, dataset, config_file_list, overrides)))
    return rows


def guarded_run(model: str, seed: int | None, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()`` as the row of ``model``, or an error row: one failing model must not take down the comparison."""
    try:
        return {**run(), "model": model, "seed": seed}
    except Exception as error:  # noqa: BLE001
        details = "" if isinstance(error, UserError) else f"\n{traceback.format_exc()}"
        getLogger().error(f"{model} failed: {error}{details}")
        return {"model": model, "seed": seed, "error": f"{type(error).__name__}: {error}"}


def compare(models: list[str], dataset: str, config_file_list: list[str] | None = None,
            config_dict: dict[str, Any] | None = None, cemg_dict: dict[str, Any] | None = None,
            seeds: list[int] | None = None, reuse_collab: bool = True, output: str | None = None,
            reference: str | None = None) -> list[dict[str, Any]]:
    """The benchmark: every model on every seed, then the baseline ensembles that the fused rows are compared
    with (``baseline_ensembles``). CEMG reads the collaborative model of the SASRec run of its own seed when SASRec
    is listed before it (``reuse_collab``), so no better-tuned SASRec hides inside CEMG. With ``output``, the
    table is written after every run, so a comparison cut short keeps what it finished; a typo in any variant
    stops it before the first training."""
    check_variants(models, dataset, config_file_list, config_dict)
    rows: list[dict[str, Any]] = []
    for model in models:
        for seed in seeds or [None]:
            overrides = dict(config_dict or {})
            if parse_variant(model)[0] == "CEMG":  # CEMG and its variants, e.g. CEMG[fusion=concat]
                overrides.update(cemg_dict or {})
                sasrec = next((r for r in rows if r["model"] == "SASRec" and r["seed"] == seed and "error" not in r),
                              None)
                if sasrec and reuse_collab and "collab_source" not in overrides:
                    overrides["collab_source"] = sasrec["checkpoint"]
            rows += compare_models([model], dataset, config_file_list, overrides, [seed] if seed is not None else None)
            if output:
                report(rows, output, reference)
    rows += baseline_ensembles(rows, dataset, config_file_list, config_dict)
    if output:
        report(rows, output, reference)
    return rows


def stop_if_any_failed(rows: list[dict[str, Any]], program: str) -> None:
    """Exit with status 1 when a run of the table failed (after its outputs are written), so that a script or a
    queue that runs comparisons never takes a table with a failed row for a finished benchmark."""
    failed = [f"{row['model']} (seed {row['seed']}): {row['error']}" for row in rows if "error" in row]
    if failed:
        raise SystemExit(f"{program}: {len(failed)} run(s) failed, marked 'failed' in the table beside the others: "
                         + "; ".join(failed))


def report(rows: list[dict[str, Any]], output: str | None, reference: str | None = None) -> list[dict[str, Any]]:
    """Print the table of ``rows`` (and write it when ``output`` is a prefix); returns the summary."""
    summary = summarise(rows, reference)
    print(markdown_table(summary))
    print("machine:", next((e["machine"] for e in summary if "machine" in e), {}))
    if output:
        print("written:", ", ".join(write_outputs(rows, summary, output)))
    return summary


def baseline_ensembles(rows: list[dict[str, Any]], dataset: str, config_file_list: list[str] | None,
                       config_dict: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``B + B`` for every baseline B with checkpoints of at least two seeds, whenever a row is a score fusion
    (``CEMG + collab score``): seed i's model fused with seed i+1's (cyclically) by the same score-fusion code
    and weights, the weight chosen on validation. B includes the collaborative model CEMG trained in its stage 1.
    An ensemble already among ``rows`` is not built again."""
    fused = [r for r in rows if r.get("score_fusion")]
    if not fused:
        return []
    weights = fused[0]["config"]["score_fusion_weights"]
    members: dict[str, list[tuple[str, int | None, str]]] = {}  # row name -> (model, seed, checkpoint) per run
    for row in rows:
        if "error" in row or row.get("ensemble_of"):
            continue
        if row["config"]["model"] != "CEMG" and row.get("checkpoint"):  # the row's name may be any label
            members.setdefault(row["model"], []).append((row["config"]["model"], row["seed"], row["checkpoint"]))
        elif (row.get("collaborative") or {}).get("checkpoint"):
            members.setdefault(collaborative_name(row), []).append(
                (row["config"]["collab_source"], row["seed"], row["collaborative"]["checkpoint"]))
    built = {r["model"] for r in rows if r.get("ensemble_of")}  # e.g. merged from an earlier comparison
    ensembles = []
    for name, runs in members.items():
        if f"{name} + {name}" in built:
            continue
        for i, (model, seed, checkpoint) in enumerate(runs if len(runs) > 1 else []):
            checkpoints = [checkpoint, runs[(i + 1) % len(runs)][2]]
            overrides = dict(config_dict or {}, **({"seed": seed} if seed is not None else {}))
            ensembles.append(guarded_run(f"{name} + {name}", seed, lambda: run_score_ensemble(
                model, dataset, checkpoints, weights, config_file_list, overrides)))
    return ensembles


def collaborative_name(row: dict[str, Any]) -> str:
    """The row name of the collaborative model that a CEMG run trained in its stage 1."""
    return f"{row['config']['collab_source']} (stage 1 of {row['model']})"


def derived_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a CEMG run adds beside its own: the score fusion, and its stage-1 collaborative model alone."""
    rows = []
    if row.get("score_fusion"):
        rows.append(fusion_row(row))
    if row.get("collaborative"):
        collab = row["collaborative"]
        rows.append({**row, **collab, "model": collaborative_name(row), "score_fusion": None, "collaborative": None})
    return rows


def check_one_protocol(rows: list[dict[str, Any]]) -> None:
    """One table, one ranking protocol: runs with and without ``mask_history`` are not comparable row by row."""
    masked = {bool((r.get("config") or {}).get("mask_history")) for r in rows}
    if len(masked) > 1:
        names = sorted({r["model"] for r in rows if (r.get("config") or {}).get("mask_history")})
        raise InputError(f"these runs were ranked under two protocols: {', '.join(names)} with the history items "
                         "masked (mask_history), the others without. Compare runs of one protocol; "
                         "benchmarks/history_items.py ranks a finished run's test users with its history masked.")


def summarise(rows: list[dict[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """Per model: the number of seeds, mean and standard deviation over seeds of the test metrics, valid NDCG@10
    and seconds; where per-user results exist, the paired difference of test NDCG@10 and Recall@10 against
    ``reference`` (default: the first row that is not CEMG) and the metrics by the target's popularity."""
    rows = [r for row in rows for r in [row, *derived_rows(row)]]
    check_one_protocol(rows)
    names = list(dict.fromkeys(r["model"] for r in rows))
    if reference is None:
        reference = next((n for n in names if parse_variant(n.split(" ")[0])[0] != "CEMG"), None)
    elif reference not in names:
        raise InputError(f"--reference '{reference}' is not a row of the table; rows: {', '.join(names)}.")
    users = {name: [r["per_user"] for r in rows if r["model"] == name and isinstance(r.get("per_user"), UserResults)]
             for name in names}
    summary = []
    for model in names:
        runs = [r for r in rows if r["model"] == model]
        ok = [r for r in runs if "error" not in r]
        entry: dict[str, Any] = {"model": model, "runs": len(runs), "seeds": len(ok), "failed": len(runs) - len(ok)}
        if not ok:
            entry["error"] = runs[0]["error"]
            summary.append(entry)
            continue
        values = {f"test {m}": [float(r["test_result"][m]) for r in ok] for m in METRICS}
        values["valid ndcg@10"] = [float(r["best_valid_result"]["ndcg@10"]) for r in ok]
        if all((r.get("cold_start") or {}).get("test_result") for r in ok):  # run with cold_item_ratio > 0
            values["cold users"] = [float(r["cold_start"]["test_users"]) for r in ok]
            for m in COLD_METRICS:
                values[f"cold {m}"] = [float(r["cold_start"]["test_result"][m]) for r in ok]
                values[f"warm {m}"] = [float(r["cold_start"]["warm_result"][m]) for r in ok]
            values["cold share@10"] = [float(r["cold_start"]["cold_share@10"]) for r in ok]
        values["train s"] = [float(r["seconds"]["train"]) for r in ok]
        values["test s"] = [float(r["seconds"]["test"]) for r in ok]
        for key, series in values.items():
            entry[key] = statistics.fmean(series)
            entry[f"{key} std"] = statistics.stdev(series) if len(series) > 1 else 0.0
        if reference and model != reference and users[model] and users.get(reference):
            entry["reference"] = reference
            pairs = [(metric, users[model], users[reference]) for metric in PAIRED_METRICS]
            if all(u.held_out is not None for u in users[model] + users[reference]):  # cold start: the cold targets
                mine, theirs = ([u.held_out_only() for u in users[name]] for name in (model, reference))
                if len({u for r in mine for u in r.users} & {u for r in theirs for u in r.users}) > 1:
                    pairs += [(f"cold {metric}", mine, theirs) for metric in COLD_METRICS]
            for name, mine, theirs in pairs:
                diff = paired_difference(mine, theirs, name.removeprefix("cold "))
                entry.update({f"vs ref {name}": diff.mean, f"vs ref {name} low": diff.low,
                              f"vs ref {name} high": diff.high, f"vs ref {name} p": diff.p_value,
                              f"vs ref {name} verdict": diff.verdict})
        if users[model]:
            for bucket in popularity_breakdown(users[model], list(PAIRED_METRICS)):
                entry[f"popularity {bucket['bucket']} share"] = bucket["share"]
                for metric in PAIRED_METRICS:
                    entry[f"popularity {bucket['bucket']} {metric}"] = bucket[metric]
        entry["parameters"] = ok[0]["parameters"]
        entry["machine"] = ok[0]["machine"]
        summary.append(entry)
    return summary


def load_runs(path: str) -> list[dict[str, Any]]:
    """The runs of a comparison output (``prefix`` or ``prefix.json``) or of one run's result file, with their
    per-user results read back."""
    path = path if path.endswith(".json") else f"{path}.json"
    if not os.path.isfile(path):
        raise MissingFileError(f"--merge: no file {path}; give result files or the --output prefix of an earlier "
                               "comparison.")
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    folder = os.path.dirname(os.path.abspath(path))
    return [read_user_results(run, folder) for run in (content["runs"] if "runs" in content else [content])]


def merge_runs(paths: list[str]) -> list[dict[str, Any]]:
    """The runs of several comparison outputs or result files (``load_runs``), each run once: an output that was
    merged with ``--ensembles`` holds the runs its ensembles were built from, and merging it beside those runs' own
    files must not count them twice (a run is the same model, seed, checkpoint and test result)."""
    runs, seen = [], set()
    for path in paths:
        for run in load_runs(path):
            key = (run["model"], run.get("seed"), run.get("checkpoint"), tuple(run.get("ensemble_of") or ()),
                   json.dumps(run.get("test_result"), sort_keys=True))
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs


def load_run(path: str) -> dict[str, Any]:
    """The one run of a result file (``load_runs``), for the tools that read one run at a time."""
    runs = load_runs(path)
    if len(runs) != 1:
        raise InputError(f"{path}: holds {len(runs)} runs; give the result of one run.")
    return runs[0]


# Keys of a recorded config that rebuild the run's data and model (the rest are RecBole's run-time state).
DATA_KEYS = ("data_path", "feature_path", "seed", "eval_batch_size", "checkpoint_dir", "MAX_ITEM_LIST_LENGTH")


def data_overrides(run: dict[str, Any]) -> dict[str, Any]:
    """The recorded keys of a run (``load_run``) that rebuild its data, for the tools that reload a finished run
    (the same held-out items too: they are chosen from the seed)."""
    recorded = run["config"]
    overrides = {k: recorded[k] for k in DATA_KEYS if k in recorded}
    if os.path.basename(os.path.normpath(overrides["data_path"])) == run["dataset"]:  # RecBole appends the name again
        overrides["data_path"] = os.path.dirname(os.path.normpath(overrides["data_path"]))
    return overrides


def run_config(run: dict[str, Any]) -> Config:
    """The config a finished run (``load_run``) was trained with, rebuilt from its record: its data keys and every
    key of its model's schema whose recorded value is not what the config derives by itself."""
    recorded, overrides = run["config"], data_overrides(run)
    defaults = Config(model=recorded["model"], dataset=run["dataset"], config_dict=overrides)
    overrides.update({k: recorded[k] for k in schema(recorded["model"])
                      if k in recorded and recorded[k] != defaults[k]})
    return Config(model=recorded["model"], dataset=run["dataset"], config_dict=overrides)


def reload_run(run: dict[str, Any]) -> tuple[torch.nn.Module, PreparedData]:
    """A finished run's model with its checkpoint's weights (in eval mode), and its data: the same split and the same
    held-out items (they are chosen from the seed)."""
    if not run.get("checkpoint") or not os.path.isfile(run["checkpoint"]):
        raise InputError(f"run '{run['model']}': its checkpoint {run.get('checkpoint')!r} is gone; rerun it.")
    config = run_config(run)
    data = prepare_data(config)
    model = get_model(run["config"]["model"])(config, data.train._dataset)
    state = read_checkpoint(run["checkpoint"], "checkpoint")["state_dict"]
    getattr(model, "load_checkpoint_state", model.load_state_dict)(state)  # CEMG's also rebuilds its code table
    return model.eval(), data


@torch.no_grad()
def scored(model: torch.nn.Module, loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every user's scores of all items (history and padding at -inf, as RecBole ranks them; the user's item sequence
    too under ``mask_history``) and target, batch by batch in the loader's order."""
    batches = []
    for interaction, history_index, _, targets in loader:
        scores = model.full_sort_predict(interaction).view(len(targets), -1).float().clone()
        if history_index is not None:
            scores[history_index] = float("-inf")
        scores[:, 0] = float("-inf")
        mask_history(scores, interaction, loader.config)
        batches.append((scores, targets))
    return batches


def scored_user_results(batches: list[tuple[torch.Tensor, torch.Tensor]], interactions: list, dataset,
                        item_counts: torch.Tensor) -> UserResults:
    """The per-user results (target rank, top 10) of ``scored``'s ``batches``, re-ranked or not, whose rows are
    those of ``interactions`` (the loader's batches, in the same order)."""
    ranks = torch.cat([target_ranks(scores, targets) for scores, targets in batches])
    top = torch.cat([scores.topk(10, dim=1).indices for scores, _ in batches])
    users = torch.cat([interaction[dataset.uid_field] for interaction in interactions])
    return UserResults.of_ids(dataset, users, torch.cat([t for _, t in batches]), ranks, top, item_counts)


def same_targets(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    """Whether two scorings (``scored``'s targets, batch by batch) saw the same users' targets in the same batches,
    so that their scores can be compared user by user."""
    return [len(t) for t in first] == [len(t) for t in second] and all(
        torch.equal(a, b) for a, b in zip(first, second))


def print_table(table: str, output: str | None) -> None:
    """Print a markdown table, and write it atomically to ``output`` when given."""
    print(table, end="")
    if output:
        with atomic_write(output, "w", encoding="utf-8") as f:
            f.write(table)


def fusion_row(row: dict[str, Any]) -> dict[str, Any]:
    """A score-fusion result as a row of its own, beside the pure generative row of the same run."""
    fusion = row["score_fusion"]
    return {**row, "model": f"{row['model']} + collab score", "best_valid_result": fusion["best_valid_result"],
            "test_result": fusion["test_result"], "per_user": fusion.get("per_user"),
            "cold_start": fusion.get("cold_start"), "score_fusion": None, "collaborative": None}


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The comparison table (mean ± std over seeds; paired difference against the reference row with its 95 %
    interval, ▲/▼ where it excludes 0), then test metrics by the target item's training popularity."""
    cold = [c for c in ["cold users"] + [f"{part} {m}" for part in ("cold", "warm") for m in COLD_METRICS]
            + ["cold share@10"] if any(c in e for e in summary)]
    columns = [f"test {m}" for m in METRICS] + ["valid ndcg@10"] + cold + ["train s", "test s"]
    paired = [m for m in [*PAIRED_METRICS, *(f"cold {m}" for m in COLD_METRICS)]
              if any(f"vs ref {m}" in e for e in summary)]
    reference = next((e["reference"] for e in summary if "reference" in e), None)
    header = columns + [f"Δ {m} vs {reference}" for m in paired]
    lines = ["| model | seeds | " + " | ".join(header) + " | parameters |", "|---" * (len(header) + 3) + "|"]
    for entry in summary:
        if "error" in entry:
            lines.append(f"| {entry['model']} | 0 | failed: {entry['error'][:120]} |" + " |" * len(header))
            continue
        cells = []
        for column in columns:
            if column not in entry:
                cells.append("-")
                continue
            digits = 1 if column.endswith(" s") else 0 if column == "cold users" else 4
            cell = f"{entry[column]:.{digits}f}"
            if entry["seeds"] > 1:
                cell += f" ± {entry[column + ' std']:.{digits}f}"
            cells.append(cell)
        for metric in paired:
            key = f"vs ref {metric}"
            mark = {"win": " ▲", "loss": " ▼"}.get(entry.get(f"{key} verdict"), "")
            cells.append(f"{entry[key]:+.4f} [{entry[key + ' low']:+.4f}, {entry[key + ' high']:+.4f}]{mark}"
                         if key in entry else "-")
        lines.append(f"| {entry['model']} | {entry['seeds']} | " + " | ".join(cells) + f" | {entry['parameters']:,} |")
    if paired:
        lines.append(f"\nΔ: paired difference of the per-user test metric against {reference} over the same test "
                     "users (each user's mean over seeds), with the 95 % confidence interval of a paired t-test; "
                     "▲ / ▼: a significant win / loss." + (" Δ cold: over the test users whose target was held out "
                                                           "(each user's mean over the seeds it was one in)."
                                                           if any(m.startswith("cold ") for m in paired) else ""))
    buckets = [label for label, _, _ in POPULARITY_BUCKETS]
    popular = [e for e in summary if f"popularity {buckets[0]} share" in e]
    if popular:
        shares = " | ".join(f"{label} ({popular[0][f'popularity {label} share']:.0%})" for label in buckets)
        lines += ["", "Test recall@10 / ndcg@10 by the target item's interactions in the training split (share of "
                  "test users):", "", f"| model | {shares} |", "|---" * (len(buckets) + 1) + "|"]
        for entry in popular:
            cells = [f"{entry[f'popularity {b} recall@10']:.4f} / {entry[f'popularity {b} ndcg@10']:.4f}"
                     if entry[f"popularity {b} share"] else "-" for b in buckets]
            lines.append(f"| {entry['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(rows: list[dict[str, Any]], summary: list[dict[str, Any]], prefix: str) -> list[str]:
    """``prefix``.json (every run; their per-user results in ``prefix``.users/), .csv and .md (the summary),
    .png (bar chart of test metrics)."""
    paths = [f"{prefix}.json", f"{prefix}.csv", f"{prefix}.md", f"{prefix}.png"]
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    stored = [store_user_results(row, os.path.join(f"{prefix}.users", f"{i:02d}-{slug(row['model'])}-{row['seed']}"),
                                 folder) for i, row in enumerate(rows)]
    with atomic_write(paths[0], "w", encoding="utf-8") as f:
        json.dump({"runs": stored, "summary": summary}, f, indent=2, default=str)
    remove_stale_user_files(f"{prefix}.users", folder, stored)
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


def remove_stale_user_files(users_folder: str, folder: str, stored: list[dict[str, Any]]) -> None:
    """Delete the per-user files in ``users_folder`` that no stored row names: a table rewritten with more rows
    numbers them anew, and the files of its earlier version would pile up beside the ones it reads."""
    named = {path for row in stored for path in stored_user_files(row, folder)}
    for name in os.listdir(users_folder) if os.path.isdir(users_folder) else []:
        path = os.path.abspath(os.path.join(users_folder, name))
        if name.endswith(".users.tsv.gz") and path not in named:
            os.remove(path)


def slug(name: str, max_length: int = 96) -> str:
    """A file-name-safe form of a row name; a name longer than ``max_length`` (a variant spelling out a whole dict)
    is cut and told apart by a hash of the whole, so that its files stay under the file systems' 255-byte limit."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    if len(safe) <= max_length:
        return safe
    return f"{safe[:max_length - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


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
