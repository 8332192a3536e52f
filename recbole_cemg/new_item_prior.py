"""A prior on new items: the generator's distribution as a two-part mixture of the items that training saw and the
new ones (no training interaction: cold start), each part renormalised and given a fixed share of every user's
probability.

Training never has a new item as its target, so the mass the generator gives the new items as a group is not learned
from anything, and it is what decides whether one of them reaches a top-10 list. Within the group, their order comes
from the codes their content gives them. The mixture keeps both orders and replaces the group's mass by a prior: the
share of next items that are new. As with score fusion, the share is chosen on the validation split (share 0: the
generator alone), and the result is a row of its own beside the generator's.
"""

from __future__ import annotations

import math

import torch


def mixture_log_probs(scores: torch.Tensor, new: torch.Tensor, share: float) -> torch.Tensor:
    """``log(share * p(i | new) + (1 - share) * p(i | seen))`` for every item of ``scores`` ``[users, items]`` (log-
    probabilities or logits; -inf stays -inf), ``new`` a mask over the items, ``share`` in ``[0, 1)`` (0: ``scores``
    as they are)."""
    if not share:
        return scores
    scores = scores.float()
    within_new = torch.log_softmax(scores.masked_fill(~new, float("-inf")), dim=-1) + math.log(share)
    within_seen = torch.log_softmax(scores.masked_fill(new, float("-inf")), dim=-1) + math.log1p(-share)
    return torch.where(new, within_new, within_seen)


class NewItemMixture(torch.nn.Module):
    """A trained model ranked by its mixture with the new items' share ``weight`` (0: the model alone), the
    interface ``fuse_on_valid_and_test`` chooses a weight through."""

    def __init__(self, model: torch.nn.Module, new: torch.Tensor) -> None:
        super().__init__()
        self.model, self.new, self.weight = model, new, 0.0

    def full_sort_predict(self, interaction) -> torch.Tensor:
        scores = self.model.full_sort_predict(interaction)
        return mixture_log_probs(scores, self.new.to(scores.device), self.weight)
