"""ContentSimilarity: a content-only reference ranker that needs no training.

Every item is scored by the cosine similarity of its content features to the mean of the history's (per modality
of ``modalities``, averaged over the modalities). It knows nothing of co-consumption and ranks an item that no
training interaction has seen exactly as it ranks any other, so it is the floor that content-derived codes (CEMG
on cold-start items) must clear. With ``exclude_history`` the history's own items are left out of the ranking: they
are the most similar to the profile by construction, and a ranker that learns nothing cannot learn that repeats are
rare (no Beauty test target repeats an item of its history), which every trained model does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_cemg.data.features import load_modalities
from recbole_cemg.errors import InputError


class ContentSimilarity(SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        content = load_modalities(config, dataset, config["modalities"] or [])
        if not content:
            raise InputError("ContentSimilarity ranks by content features: set `modalities` (e.g. [text]) and their "
                             "feature files.")
        # Unit vectors; an item without the modality (and the padding item) has a zero row, so it adds nothing to a
        # history's profile and scores 0 on that modality. Derived from the feature files, never saved.
        self.modality_names = [f.name for f in content]
        self.exclude_history = config["exclude_history"]
        for feats in content:
            unit = F.normalize(feats.values.float(), dim=1) * feats.mask.unsqueeze(1)
            self.register_buffer(f"unit_{feats.name}", unit, persistent=False)
        self.fake_loss = torch.nn.Parameter(torch.zeros(1))  # RecBole's trainer needs a parameter; nothing to learn

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.fake_loss.sum()

    def full_sort_predict(self, interaction) -> torch.Tensor:
        history = interaction[self.ITEM_SEQ]  # right-padded with item 0, whose rows are zero
        scores = torch.zeros(len(history), self.n_items, device=history.device)
        for name in self.modality_names:
            unit = getattr(self, f"unit_{name}")
            scores += F.normalize(unit[history].sum(1), dim=1) @ unit.T
        scores /= len(self.modality_names)
        if self.exclude_history:
            scores.scatter_(1, history, float("-inf"))  # and the padding item 0
        return scores

    def predict(self, interaction) -> torch.Tensor:
        return self.full_sort_predict(interaction).gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
