"""The contract between CEMG and its generators: each one owns its loss and its scores of every item.

CEMG turns RecBole's interactions into ``ItemSequence`` (right-padded item ids with what a generator may read of each
item) and never asks which generator it holds. A new generator (longer codes, another output layer, another
decoder) is a subclass of ``NextItemGenerator`` registered in ``GENERATORS`` under the name ``generator_input``
selects, the way one ``transformers`` model family shares one forward contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from recbole_cemg.model.decoding import DecodingStats


@dataclass
class ItemSequence:
    """Right-padded item sequences ``[batch, length]`` (0 = padding) and their items' codes, collaborative
    embeddings and, with joint training, the tokenizer's quantised latent (straight-through)."""

    items: torch.Tensor
    lengths: torch.Tensor
    codes: torch.Tensor  # [batch, length, levels]
    collab: torch.Tensor  # [batch, length, collab_dim]
    latent: torch.Tensor | None = None  # [batch, length, latent_dim]

    def rows(self, index: torch.Tensor) -> ItemSequence:
        return ItemSequence(**{k: None if v is None else v[index] for k, v in vars(self).items()})

    def inputs(self) -> ItemSequence:
        """All positions but the last, with the same lengths: what a window ``history + target`` is read from."""
        return ItemSequence(**{k: v if v is None or k == "lengths" else v[:, :-1] for k, v in vars(self).items()})


# A teacher for distillation: item rows ``[N, length]`` and history lengths ``[N]`` (the first ``lengths[n]`` items
# of row n are its history, whatever follows them) -> the log-probability of every item ``[N, items]`` as the next
# one. CEMG's teacher is its collaborative model (``CEMG.teacher_log_probs``).
Teacher = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NextItemGenerator(nn.Module):
    """A model of the next item's code tuple given the history's items."""

    def __init__(self, num_beams: int) -> None:
        super().__init__()
        self.decoding_stats = DecodingStats(num_beams)
        self.item_codes: torch.Tensor | None = None
        self.item_collab: torch.Tensor | None = None
        self.content_codes: torch.Tensor | None = None
        self.decode_codes: Callable[[torch.Tensor], torch.Tensor] | None = None

    def set_items(self, item_codes: torch.Tensor, collab_embeddings: torch.Tensor,
                  content_codes: torch.Tensor | None = None,
                  decode_codes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """The item table changed (codes ``[items, levels]``, row 0 the padding item, the collaborative embeddings
        and, for cold-target simulation, each item's content-only code tuple): keep what scoring every item needs;
        ``decode_codes``: the tokenizer's map from code tuples ``[n, levels]`` (without the de-duplication level) to
        their quantised latent ``[n, latent_dim]``, the sum of their codewords."""
        self.item_codes, self.item_collab, self.content_codes = item_codes, collab_embeddings, content_codes
        self.decode_codes = decode_codes

    def loss(self, window: ItemSequence, all_positions: bool, teacher: Teacher | None = None) -> torch.Tensor:
        """Mean negative log-likelihood of each row's last item given the items before it, or (``all_positions``)
        of every item after the first given its prefix; with a ``teacher`` (generators that distil), mixed with the
        cross-entropy to the teacher's distribution of the same next item."""
        raise NotImplementedError

    def all_item_scores(self, history: ItemSequence) -> torch.Tensor:
        """Scores ``[batch, items]`` of every item as the next one (RecBole's full ranking; column 0, the padding
        item, is never a candidate)."""
        raise NotImplementedError

    def item_scores(self, history: ItemSequence, items: torch.Tensor) -> torch.Tensor:
        """The score of one given item per row (RecBole's ``predict``). Sampled evaluation sends many candidate rows
        of one user, so each distinct history is scored once."""
        key = torch.cat([history.items, history.lengths.unsqueeze(1)], dim=1)
        _, inverse = torch.unique(key, dim=0, return_inverse=True)
        first = torch.empty(int(inverse.max()) + 1, dtype=torch.long, device=key.device)
        first[inverse] = torch.arange(len(key), device=key.device)  # one row of each distinct history
        return self.all_item_scores(history.rows(first))[inverse, items]

    def trainable_state_names(self) -> set[str]:
        """Names (relative to this module) of the parameters that training changes."""
        return {name for name, p in self.named_parameters() if p.requires_grad}
