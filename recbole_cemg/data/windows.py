"""Training windows for generators that learn from every position of a history at once."""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader


def window_rows(user_ids: np.ndarray, stride: int) -> np.ndarray:
    """Indices of every ``stride``-th row of each user, counted back from the user's last row.

    RecBole's sequential training rows are the prefixes of each user's history in time order, so the last row of a
    user holds the longest window and every ``stride``-th row before it starts a window ``stride`` items earlier.
    """
    order = np.argsort(user_ids, kind="stable")
    sorted_ids = user_ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    ends = np.r_[starts[1:], len(sorted_ids)]
    position = np.arange(len(sorted_ids)) - np.repeat(starts, ends - starts)
    from_end = np.repeat(ends - starts, ends - starts) - 1 - position
    return np.sort(order[from_end % stride == 0])


def windowed_train_data(config, train_data, stride: int) -> TrainDataLoader:
    """A shuffled training loader over the rows chosen by :func:`window_rows`."""
    dataset = train_data._dataset
    rows = window_rows(dataset.inter_feat[dataset.uid_field].numpy(), stride)
    subset = dataset.copy(dataset.inter_feat[torch.from_numpy(rows)])
    return TrainDataLoader(config, subset, None, shuffle=config["shuffle"])
