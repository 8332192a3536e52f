"""Collaborative-guided multimodal fusion.

Each available modality of an item (text, image, any further feature file, and the collaborative embedding itself)
becomes one token in a shared space. With ``mode="guided"`` the item's collaborative embedding is the attention query
over these tokens, so every item gets its own modality weights; missing modalities are masked out of the softmax, so
an item that lacks a modality is fused from the ones it has. ``concat`` and ``mean`` are the ablations.

With ``popularity`` the guided query also reads ``log(1 + training count)`` of the item: a rarely seen item's
collaborative embedding is barely trained, and the fusion can learn to lean on its content instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FUSION_MODES = ("guided", "concat", "mean")


class CollaborativeGuidedFusion(nn.Module):
    def __init__(self, modality_dims: list[int], collab_dim: int, dim: int, mode: str = "guided",
                 guidance: bool = True, popularity: bool = False) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"`fusion` must be one of {FUSION_MODES}, got '{mode}'.")
        if not modality_dims:
            raise ValueError("Fusion needs at least one modality (set `modalities`).")
        self.mode, self.guidance, self.dim = mode, guidance, dim
        self.projections = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim)) for d in modality_dims)
        if mode == "guided":
            self.query = nn.Sequential(nn.LayerNorm(collab_dim), nn.Linear(collab_dim, dim)) if guidance else None
            self.static_query = None if guidance else nn.Parameter(torch.randn(dim) / math.sqrt(dim))
            self.key = nn.Linear(dim, dim, bias=False)
            self.popularity_query = nn.Linear(1, dim, bias=False) if popularity else None
        elif mode == "concat":
            self.merge = nn.Linear(dim * len(modality_dims), dim)

    def forward(self, features: list[torch.Tensor], masks: list[torch.Tensor], collab: torch.Tensor,
                popularity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse ``[batch, d_m]`` modality features (``masks[m][i]``: item ``i`` has modality ``m``; ``popularity``
        ``[batch]``: each item's training count, read only with ``popularity=True``).

        Returns the fused vectors ``[batch, dim]`` and the modality weights ``[batch, modalities]``.
        """
        tokens = torch.stack([proj(x) for proj, x in zip(self.projections, features)], dim=1)  # [B, M, dim]
        mask = torch.stack(masks, dim=1)  # [B, M]
        if self.mode == "concat":
            weights = mask.float()
            fused = self.merge((tokens * weights.unsqueeze(-1)).flatten(1))
            return fused, weights / weights.sum(1, keepdim=True).clamp(min=1)
        if self.mode == "mean":
            weights = mask.float() / mask.float().sum(1, keepdim=True).clamp(min=1)
        else:
            query = self.query(collab) if self.guidance else self.static_query.expand(tokens.shape[0], -1)
            if self.popularity_query is not None:
                query = query + self.popularity_query(torch.log1p(popularity.float()).unsqueeze(1))
            scores = torch.einsum("bd,bmd->bm", query, self.key(tokens)) / math.sqrt(self.dim)
            # A finite fill keeps the softmax (and its gradient) free of NaN for an item without any modality,
            # whose weights are then all zero.
            weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=1) * mask
        return torch.einsum("bm,bmd->bd", weights, tokens), weights
