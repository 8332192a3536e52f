"""Score fusion: one ranker's log-probabilities plus a weighted second ranker's, with the weight chosen on the
validation split.

``CEMG + collab score`` (the generator fused with its collaborative model) and the baseline ensemble
``SASRec + SASRec`` (two runs of different seeds) go through this same code, so that an ensemble is compared with an
ensemble fused the same way, never with a single model.
"""

from __future__ import annotations

from logging import getLogger
from typing import Any, Callable

import torch


def fused_scores(primary: torch.Tensor, secondary: torch.Tensor, weight: float) -> torch.Tensor:
    """``log p_primary + weight * log p_secondary`` over all items, each a softmax over the real items (column 0,
    the padding item, gets no probability). Raw scores (logits) and log-probabilities are both accepted: the
    softmax of either is the same distribution."""
    def log_probs(scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float().clone()
        scores[:, 0] = float("-inf")
        return torch.log_softmax(scores, dim=-1)

    return log_probs(primary) + weight * log_probs(secondary)


class ScoreEnsemble(torch.nn.Module):
    """Two trained models ranked by their fused scores (``weight`` 0: the primary alone)."""

    def __init__(self, primary: torch.nn.Module, secondary: torch.nn.Module) -> None:
        super().__init__()
        self.primary, self.secondary, self.weight = primary, secondary, 0.0

    def full_sort_predict(self, interaction) -> torch.Tensor:
        scores = self.primary.full_sort_predict(interaction)
        if not self.weight:
            return scores
        return fused_scores(scores, self.secondary.full_sort_predict(interaction), self.weight)


def choose_fusion_weight(set_weight: Callable[[float], None], evaluate: Callable[[Any], dict],
                         weights: list[float], valid_data, metric: str) -> tuple[float, dict[float, dict]]:
    """Try every weight on the validation split and keep the best by ``metric`` (installed with ``set_weight``
    on return); returns it and the validation result of every weight."""
    valid = {}
    for weight in weights:
        set_weight(weight)
        valid[weight] = evaluate(valid_data)
        getLogger().info(f"score fusion: weight {weight} valid {metric} {valid[weight][metric]:.4f}")
    best = max(weights, key=lambda w: valid[w][metric])
    set_weight(best)
    return best, valid


def fusion_summary(weight: float, valid: dict[float, dict], test: dict, metric: str) -> dict[str, Any]:
    """The result-file entry of a fusion: the chosen weight, every weight's valid score, valid and test results."""
    return {"weight": weight, "valid_by_weight": {str(w): float(r[metric]) for w, r in valid.items()},
            "best_valid_result": dict(valid[weight]), "test_result": dict(test)}
