"""Score fusion: one ranker's log-probabilities plus a weighted second ranker's, with the weight chosen on the
validation split.

``CEMG + collab score`` (the generator fused with its collaborative model) and the baseline ensemble
``SASRec + SASRec`` (two runs of different seeds) go through this same code, so that an ensemble is compared with an
ensemble fused the same way, never with a single model.
"""

from __future__ import annotations

from logging import getLogger
from typing import Any

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


def fuse_on_valid_and_test(trainer, ensemble: ScoreEnsemble, weights: list[float], valid_data, test_data,
                           item_counts: torch.Tensor) -> dict[str, Any]:
    """Try every weight on the validation split, keep the best by the valid metric (weight 0: the primary alone),
    and test with it, per-user results kept. ``trainer`` (a plugin trainer) supplies RecBole's evaluation."""
    metric = trainer.config["valid_metric"].lower()
    valid = {}
    for weight in weights:
        ensemble.weight = weight
        valid[weight] = trainer.evaluate_model(ensemble, valid_data)
        getLogger().info(f"score fusion: weight {weight} valid {metric} {valid[weight][metric]:.4f}")
    ensemble.weight = max(weights, key=lambda w: valid[w][metric])
    with trainer.recording_users(test_data, item_counts) as users:
        test = trainer.evaluate_model(ensemble, test_data)
    getLogger().info(f"score fusion: weight {ensemble.weight} (chosen on valid), test {test}")
    return {"weight": ensemble.weight, "valid_by_weight": {str(w): float(r[metric]) for w, r in valid.items()},
            "best_valid_result": dict(valid[ensemble.weight]), "test_result": dict(test), "per_user": users[0]}
