"""A transition between code tuples: the codes of the items just read, mapped onto the next item's code queries.

The item-level generator reads an item as the sum of its code embeddings, from which no linear head can pick one
level's code back out, so "the items that share this item's cell" cannot be scored as a group by the heads alone.
This module adds to each level's query a learned linear map of the codes themselves (FPMC's item-to-item term, over
codes instead of items). It reads nothing but codes, so a generator that uses it still ranks items purely by their
code tuples.

- ``scope``: ``level`` maps each level's code to the same level's query (one hidden x hidden map per level: a cell
  predicts the cells of the same view); ``tuple`` maps the whole tuple to every level's query (one map of the
  concatenated levels: a cell of one view, or a residual code, can predict a cell of another).
- ``items``: how many of the last items read are the source, weighted by a learned weight per distance (initialised
  to the last item alone), so the cells of an item read two or three steps back can be scored as a group too.

The maps start at zero: a generator with a transition starts as the one without.
"""

from __future__ import annotations

import torch
from torch import nn


class CodeTransition(nn.Module):
    def __init__(self, levels: int, hidden: int, scope: str = "level", items: int = 1) -> None:
        super().__init__()
        self.scope = scope
        self.items = items
        width = levels * hidden
        self.weight = nn.Parameter(torch.zeros((levels, hidden, hidden) if scope == "level" else (width, width)))
        recency = torch.zeros(items)
        recency[0] = 1.0
        self.recency = nn.Parameter(recency) if items > 1 else None

    def forward(self, recent: torch.Tensor) -> torch.Tensor:
        """Code embeddings of the last ``items`` items read before each scored state, ``[n, items, levels, hidden]``
        (distance 0 first; zeros before a sequence's start) -> what the transition adds to those states' queries,
        ``[n, levels * hidden]``."""
        source = recent[:, 0] if self.recency is None else torch.einsum("k,nklh->nlh", self.recency, recent)
        if self.scope == "level":
            return torch.einsum("nli,loi->nlo", source, self.weight).flatten(-2)
        return source.flatten(-2) @ self.weight.T
