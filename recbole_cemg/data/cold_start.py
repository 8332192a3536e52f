"""Cold-start evaluation: hold a share of items out of training entirely and report the test users whose target is
one of them separately (from the per-user results of the full test evaluation). Content-derived codes let CEMG recommend such items; an ID-embedding model cannot."""

from __future__ import annotations

import torch
import hashlib
from typing import Any

import numpy as np
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction

from recbole_cemg.errors import InputError
from recbole_cemg.evaluation import UserResults
from recbole_cemg.schema import schema, violation


def choose_cold_items(n_items: int, ratio: float, seed: int) -> torch.Tensor:
    """A boolean mask over internal item ids marking ``round(ratio * (n_items - 1))`` random items (never padding);
    ``ratio`` within the config schema's bounds of ``cold_item_ratio`` (at least half the items stay warm)."""
    expected = violation(ratio, schema()["cold_item_ratio"])
    if expected:
        raise InputError(f"config `cold_item_ratio` = {ratio!r}: expected {expected}.")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_items - 1, generator=generator)[: round(ratio * (n_items - 1))] + 1
    cold = torch.zeros(n_items, dtype=torch.bool)
    cold[chosen] = True
    return cold


def remove_from_training(config, train_data, cold: torch.Tensor) -> TrainDataLoader:
    """Training rows without the cold items: rows that target one are dropped, and they are cut out of histories
    (the remaining history keeps its order; rows left with no history are dropped). ``train_data`` is left as it
    was."""
    dataset = train_data._dataset
    item_field = dataset.iid_field
    length_field = config["ITEM_LIST_LENGTH_FIELD"]
    fields = dict(dataset.inter_feat.interaction)  # new tensors replace the fields of this copy, not the dataset's
    history = fields[item_field + config["LIST_SUFFIX"]]
    keep = (history > 0) & ~cold[history]
    order = torch.argsort((~keep).int(), dim=1, stable=True)  # kept items first, in their original order
    for field, values in fields.items():
        if field.endswith(config["LIST_SUFFIX"]):
            index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
            compacted = values.gather(1, index)
            mask = keep.gather(1, order).view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
            fields[field] = torch.where(mask, compacted, torch.zeros_like(compacted))
    fields[length_field] = keep.sum(1)
    rows = ~cold[fields[item_field]] & (fields[length_field] > 0)
    subset = dataset.copy(Interaction(fields)[rows])
    return TrainDataLoader(config, subset, train_data._sampler, shuffle=config["shuffle"])


def held_out_identity(cold: torch.Tensor, dataset) -> dict[str, Any]:
    """How many items were held out and which (a checksum of their tokens), to tell runs of one split apart."""
    tokens = sorted(dataset.id2token(dataset.iid_field, torch.nonzero(cold).flatten().numpy()))
    return {"cold_items": len(tokens), "cold_items_sha256": hashlib.sha256("\n".join(tokens).encode()).hexdigest()}


def cold_start_summary(users: UserResults, cold: torch.Tensor, metrics: list[str], k: int = 10) -> dict[str, Any]:
    """Test metrics of the users whose target item was held out of training (``test_result``) and of the rest
    (``warm_result``), and the share of held-out items among every user's top-k list: a model that wins cold
    users by flooding every list with cold items shows it there. ``users.held_out`` marks the former."""
    is_cold = users.held_out

    def average(mask: np.ndarray) -> dict[str, float]:
        return {m: round(float(users.metric(m)[mask].mean()), 4) for m in metrics} if mask.any() else {}

    return {"test_users": int(is_cold.sum()), "test_result": average(is_cold),
            "warm_users": int((~is_cold).sum()), "warm_result": average(~is_cold),
            f"cold_share@{k}": float(cold.numpy()[users.top[:, :k]].mean()) if len(users.top) else 0.0}
