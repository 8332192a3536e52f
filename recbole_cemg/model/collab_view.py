"""A tokenizer view without content: residual k-means of the items' unit-normalised collaborative embeddings.

Why beside the fused views (``collab_view``): the fused codes of a rare item follow its text more than its
collaborative embedding (on Beauty a ridge probe recovers 0.45 of a rarely seen item's SASRec embedding from the
fused codes, 0.68 from residual k-means codes of the embedding itself: ``benchmarks/code_probe.py``). Next to a fused
view, this view's cells group items by what the collaborative model learned of them, the fused view's by what they
are; the tuple names an item by both. Nothing here trains: the codebooks are k-means centroids on the fitted items,
kept in the state dict so that a checkpoint reloads them, and a cold item (its collaborative embedding predicted from
its content) is coded by the same centroids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_cemg.model.rqvae import ResidualQuantizer
from recbole_cemg.model.tokenizer import TokenizerInputs


class CollaborativeView(nn.Module):
    def __init__(self, collab_dim: int, levels: int, codebook_size: int) -> None:
        super().__init__()
        self.quantizer = ResidualQuantizer(levels, codebook_size, collab_dim)
        self.quantizer.requires_grad_(False)

    @staticmethod
    def points(inputs: TokenizerInputs) -> torch.Tensor:
        return F.normalize(inputs.collab.float(), dim=-1)

    def forward(self, inputs: TokenizerInputs, targets: TokenizerInputs | None = None) -> dict[str, torch.Tensor]:
        """Codes ``[n, levels]`` and their quantised vectors; no loss (joint training leaves this view as fitted)."""
        quantised, codes, _ = self.quantizer(self.points(inputs))
        return {"loss": quantised.new_zeros(()), "codes": codes, "quantised": quantised.detach()}

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The sum of the codes' centroids ``[n, collab_dim]`` (of the first levels only, for a prefix)."""
        return self.quantizer.decode(codes)

    @torch.no_grad()
    def encode(self, inputs: TokenizerInputs, batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """Codes and the norm of what the levels leave over (the de-duplication order); no fusion weights and no
        reconstruction, which only the fused views have."""
        points = self.points(inputs)
        codes = torch.cat([self.quantizer(part)[1] for part in points.split(batch_size)])
        return {"codes": codes, "residual": (points - self.decode(codes)).norm(dim=1)}

    @torch.no_grad()
    def fit(self, inputs: TokenizerInputs, items: torch.Tensor, *args, generator: torch.Generator | None = None,
            **kwargs) -> int:
        """Residual k-means on the ``items`` (``ItemTokenizer.fit``'s arguments, the training ones unused); no epochs."""
        self.quantizer.kmeans_init(self.points(inputs.rows(items)), generator=generator)
        return 0
