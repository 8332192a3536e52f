"""Per-user test results: the rank of every test user's target item, recorded during RecBole's own evaluation.

RecBole reports one mean per metric. A paired comparison of two models (``recbole_cemg.significance``) needs each
user's value, and a breakdown by the target's popularity needs to know which item each user was tested on. Both
come from one number per user, the target's rank in the full ranking RecBole scored (after masking the padding
item and the user's history), so any later analysis needs no retraining.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.io import atomic_write


@dataclass
class UserResults:
    """One row per test user: its token, its target item's token, the target's rank (1 = top) among all items, and
    how often the target occurs in the training split."""

    users: list[str]
    items: list[str]
    ranks: np.ndarray
    train_counts: np.ndarray
    # Runs with cold_item_ratio > 0: whether the target was held out of training, so that another run of the same
    # users (e.g. at ratio 0) can be compared on exactly the warm ones.
    held_out: np.ndarray | None = None
    # In memory only (not written): the targets' internal ids and each user's top-k list of internal ids.
    targets: np.ndarray | None = None
    top: np.ndarray | None = None

    def metric(self, name: str) -> np.ndarray:
        """Per-user ``recall@k``, ``hit@k`` or ``ndcg@k``: with one target per user, RecBole's definitions reduce
        to a hit within the top k, and 1 / log2(rank + 1) for such a hit."""
        kind, _, k = name.lower().partition("@")
        hit = self.ranks <= int(k)
        if kind in ("recall", "hit"):
            return hit.astype(float)
        if kind == "ndcg":
            return np.where(hit, 1.0 / np.log2(self.ranks + 1.0), 0.0)
        raise InputError(f"per-user metric '{name}': only recall@k, hit@k and ndcg@k are per-user metrics.")

    def select(self, users: set[str]) -> UserResults:
        """The rows of ``users`` (tokens), in this file's order."""
        keep = np.array([user in users for user in self.users], dtype=bool)
        return UserResults([u for u, k in zip(self.users, keep) if k], [i for i, k in zip(self.items, keep) if k],
                           self.ranks[keep], self.train_counts[keep],
                           None if self.held_out is None else self.held_out[keep])

    @classmethod
    def of_ids(cls, dataset, users: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor, top: torch.Tensor,
               item_counts: torch.Tensor) -> UserResults:
        """From internal ids: each row's user, target item, the target's rank and the top-k list."""
        return cls(users=list(dataset.id2token(dataset.uid_field, users.numpy())),
                   items=list(dataset.id2token(dataset.iid_field, targets.numpy())), ranks=ranks.numpy(),
                   train_counts=item_counts[targets].numpy(), targets=targets.numpy(), top=top.numpy())

    def held_out_only(self) -> UserResults:
        """The rows whose target item was held out of training (runs with cold_item_ratio > 0)."""
        if self.held_out is None:
            raise InputError("these per-user results have no held_out column: the run held no items out.")
        return self.select({user for user, out in zip(self.users, self.held_out) if out})

    def write(self, path: str, metrics: list[str]) -> None:
        """A tab-separated file (atomic; gzip-compressed when ``path`` ends with .gz, byte-identical for the same
        content): user, item, rank, train_count, held_out (0/1, runs with held-out items), then one column per
        metric."""
        held_out = [] if self.held_out is None else ["held_out"]
        with atomic_write(path, "wb") as raw, _text(raw, path, "w") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["user", "item", "rank", "train_count", *held_out, *metrics])
            values = [self.metric(m) for m in metrics]
            for i, (user, item) in enumerate(zip(self.users, self.items)):
                writer.writerow([user, item, int(self.ranks[i]), int(self.train_counts[i]),
                                 *([int(self.held_out[i])] if held_out else []), *(f"{v[i]:.6g}" for v in values)])

    @classmethod
    def read(cls, path: str) -> UserResults:
        if not os.path.isfile(path):
            raise MissingFileError(f"{path}: no per-user results; they are written beside each result file "
                                   "(<result>.users.tsv.gz). Rerun the model, or compare without this run.")
        with open(path, "rb") as raw, _text(raw, path, "r") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and not {"user", "item", "rank", "train_count"} <= rows[0].keys():
            raise InputError(f"{path}: not a per-user results file (needs columns user, item, rank, train_count).")
        held_out = np.array([r["held_out"] == "1" for r in rows], dtype=bool) if rows and "held_out" in rows[0] else None
        return cls([r["user"] for r in rows], [r["item"] for r in rows],
                   np.array([int(r["rank"]) for r in rows], dtype=np.int64),
                   np.array([int(r["train_count"]) for r in rows], dtype=np.int64), held_out)


def _text(raw, path: str, mode: str) -> io.TextIOWrapper:
    """The text stream over the binary file ``raw``, through gzip for a ``.gz`` path."""
    stream = gzip.GzipFile(fileobj=raw, mode=mode + "b", mtime=0) if path.endswith(".gz") else raw
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


# Entries of a result that are rows of their own, each with its own per-user results.
EXTRA_ROWS = ("score_fusion", "collaborative")


def per_user_metrics(names) -> list[str]:
    """The metrics among ``names`` that ``UserResults.metric`` computes per user."""
    return [m for m in names if m.partition("@")[0] in ("recall", "ndcg", "hit")]


def store_user_results(result: dict, stem: str, folder: str) -> dict:
    """``result`` as it goes into a JSON file in ``folder``: its per-user results (and those of its extra rows)
    written to ``<stem>[.<row>].users.tsv.gz`` and replaced by that path, relative to ``folder``."""
    metrics = per_user_metrics(result.get("test_result", {}))

    def store(entry: dict, suffix: str) -> dict:
        entry = dict(entry)
        if isinstance(entry.get("per_user"), UserResults):
            path = f"{stem}{suffix}.users.tsv.gz"
            entry["per_user"].write(path, metrics)
            entry["per_user"] = os.path.relpath(path, folder)
        return entry

    stored = store(result, "")
    for key in EXTRA_ROWS:
        if isinstance(stored.get(key), dict):
            stored[key] = store(stored[key], f".{key}")
    return stored


def stored_user_files(stored: dict, folder: str) -> list[str]:
    """The per-user files a result stored by ``store_user_results`` names (its own and its extra rows'), as absolute
    paths."""
    entries = [stored] + [stored[key] for key in EXTRA_ROWS if isinstance(stored.get(key), dict)]
    return [os.path.abspath(os.path.join(folder, e["per_user"])) for e in entries if isinstance(e.get("per_user"), str)]


def write_result_file(result: dict, path: str) -> None:
    """One run's result as a JSON file (atomic), its per-user results beside it (``store_user_results``), in the
    form ``compare.py --merge`` reads."""
    folder = os.path.dirname(os.path.abspath(path))
    stored = store_user_results(result, os.path.splitext(path)[0], folder)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=2, default=str)


def read_user_results(result: dict, folder: str) -> dict:
    """The inverse of ``store_user_results``: ``result`` with its per-user files read back."""
    def read(entry: dict) -> dict:
        if isinstance(entry.get("per_user"), str):
            entry = {**entry, "per_user": UserResults.read(os.path.join(folder, entry["per_user"]))}
        return entry

    loaded = read(result)
    for key in EXTRA_ROWS:
        if isinstance(loaded.get(key), dict):
            loaded[key] = read(loaded[key])
    return loaded


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's target rank (1 = top) among all items: one more than the items scored strictly higher, the tie
    rule every per-user result of this plugin uses."""
    return (scores > scores.gather(1, targets.view(-1, 1))).sum(1) + 1


def training_item_counts(train_dataset, cold: torch.Tensor | None = None) -> torch.Tensor:
    """Training interactions per internal item id. RecBole's sequential training rows hold each interaction as a
    target except a user's first one, which appears only as the history of the user's first row (length 1)."""
    inter = train_dataset.inter_feat
    item_field = train_dataset.iid_field
    history = inter[item_field + train_dataset.config["LIST_SUFFIX"]]
    first = history[inter[train_dataset.config["ITEM_LIST_LENGTH_FIELD"]] == 1, 0]
    counts = torch.bincount(inter[item_field], minlength=train_dataset.item_num)
    counts += torch.bincount(first, minlength=train_dataset.item_num)
    if cold is not None:  # held out of training: their rows are removed before training
        counts[cold] = 0
    return counts


def mask_history(scores: torch.Tensor, interaction, config) -> None:
    """With ``mask_history``, every row's history items at -inf in ``scores`` ``[rows, items]`` (in place), for a
    sequential model's full ranking (a general model's history RecBole masks itself)."""
    if not config["mask_history"]:
        return
    field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if field not in interaction:
        raise InputError(f"mask_history masks the item sequence '{field}' of a sequential model's evaluation rows, "
                         "which this model's have not (RecBole masks a general model's history itself): set "
                         "mask_history: False.")
    scores.scatter_(1, interaction[field].to(scores.device), float("-inf"))  # the padding item 0 is -inf anyway


class HistoryMasking:
    """Mixin for a RecBole ``Trainer``: every full-ranking evaluation (validation, test, score fusion) ranks the
    history items last under ``mask_history``, for CEMG and the baselines alike."""

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        mask_history(scores, interaction, self.config)
        return interaction, scores, positive_u, positive_i


class PerUserRecording:
    """Mixin for a RecBole ``Trainer``: inside ``recording_users()``, every full-ranking evaluation batch records
    the rank of each row's target item and the row's top-k list; ``evaluate_model`` evaluates another model (a part or a fusion of this one)
    with the same trainer."""

    _recorded: list[torch.Tensor] | None = None

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self._recorded is not None:
            # RecBole moves the batch and the scores to the GPU but leaves the targets' indices on the CPU
            rows, items = positive_u.to(scores.device), positive_i.to(scores.device)
            if len(rows) != len(scores) or (rows != torch.arange(len(scores), device=scores.device)).any():
                raise InputError("per-user results need exactly one target item per evaluated row (leave-one-out "
                                 "splits); this evaluation has users with several.")
            ranks = target_ranks(scores, items)
            user = interaction[self.config["USER_ID_FIELD"]].to(scores.device)
            top = scores.topk(max(self.config["topk"]), dim=1).indices
            self._recorded.append(torch.cat([torch.stack([user, items, ranks], 1), top], 1).cpu())
        return interaction, scores, positive_u, positive_i

    @contextlib.contextmanager
    def recording_users(self, eval_data, item_counts: torch.Tensor) -> Iterator[list[UserResults]]:
        """``with trainer.recording_users(test_data, counts) as box: trainer.evaluate(test_data)``, then
        ``box[0]`` holds the per-user results of that evaluation (all processes' users, each once)."""
        from recbole_cemg.distributed import gather_rows

        self._recorded, box = [], []
        try:
            yield box
            width = 3 + max(self.config["topk"])  # user, target, rank, then the top-k list
            rows = torch.cat(self._recorded) if self._recorded else torch.zeros(0, width, dtype=torch.long)
            if not self.config["single_spec"]:
                rows = gather_rows(rows, len(eval_data.sampler.dataset))
            box.append(UserResults.of_ids(eval_data._dataset, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3:],
                                          item_counts))
        finally:
            self._recorded = None

    def evaluate_model(self, model: torch.nn.Module, eval_data) -> dict:
        """Evaluate ``model`` (already trained) instead of this trainer's model, with this trainer's protocol."""
        own, self.model = self.model, model
        try:
            return self.evaluate(eval_data, load_best_model=False)
        finally:
            self.model = own

