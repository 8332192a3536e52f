"""Residual-quantised VAE: an MLP encoder, L codebooks of K codes, an MLP decoder.

Two quantisers share one interface (``quantizer``): ``residual`` (the RQ-VAE of TIGER: each level codes what the
levels before it left over, so the first codes are coarse semantic clusters and the later ones ever finer residuals)
and ``product`` (RPG's digits: the latent is cut into L equal parts, each coded by its own codebook, so every code
carries the same share of the item; the encoder, trained through it, learns the rotation OPQ would fit apart).

Recipe that avoids codebook collapse (TIGER / LC-Rec / LETTER): k-means initialisation of every codebook on the
encoder's latents of all items (``ResidualQuantizer.kmeans_init``, called by the tokenizer before training),
straight-through gradients, codebook + beta * commitment loss per level, and a restart of codes that no item uses
(the encoder moves fast early in training and would otherwise leave most of the k-means codes dead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kmeans(x: torch.Tensor, k: int, iterations: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; returns ``k`` centroids (points repeat when ``len(x) < k``)."""
    n = x.shape[0]
    if n <= k:
        extra = torch.randint(n, (k - n,), generator=generator, device=x.device)
        return torch.cat([x, x[extra]], dim=0).clone()
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centroids = [x[first]]
    closest = torch.cdist(x, centroids[0]).squeeze(1) ** 2
    for _ in range(1, k):
        weights = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / n)
        chosen = torch.multinomial(weights, 1, generator=generator)
        centroids.append(x[chosen])
        closest = torch.minimum(closest, torch.cdist(x, x[chosen]).squeeze(1) ** 2)
    centroids = torch.cat(centroids, dim=0)
    for _ in range(iterations):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


@torch.no_grad()
def restart_unused(codebook: torch.Tensor, points: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Move the codes of ``codebook`` that no point chooses onto random points (in place); returns every point's
    nearest code afterwards and how many codes moved."""
    index = torch.cdist(points, codebook).argmin(dim=1)
    unused = torch.bincount(index, minlength=len(codebook)) == 0
    if not unused.any():
        return index, 0
    picks = torch.randint(len(points), (int(unused.sum()),), generator=generator, device=points.device)
    codebook[unused] = points[picks]
    return torch.cdist(points, codebook).argmin(dim=1), int(unused.sum())


class ResidualQuantizer(nn.Module):
    """Quantise a vector as a sum of one code vector per level, each level coding the previous residual."""

    def __init__(self, levels: int, codebook_size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.levels, self.codebook_size, self.beta = levels, codebook_size, beta
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim) * 0.01)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        residual = z
        for level in range(self.levels):
            self.codebooks.data[level] = kmeans(residual, self.codebook_size, generator=generator)
            residual = residual - self.codebooks.data[level][torch.cdist(residual, self.codebooks.data[level]).argmin(1)]

    @torch.no_grad()
    def restart_unused_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move every code that no vector of ``z`` uses onto a random residual at its level (dead-code restart,
        as in ``vector-quantize-pytorch``); returns how many codes moved."""
        residual, moved = z, 0
        for level in range(self.levels):
            codebook = self.codebooks.data[level]
            index, restarted = restart_unused(codebook, residual, generator)
            moved += restarted
            residual = residual - codebook[index]
        return moved

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised vectors ``[batch, dim]`` of code tuples ``[batch, levels]``, or of their first levels only:
        the sum of their codes."""
        return self.codebooks[torch.arange(codes.shape[1], device=codes.device), codes].sum(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the straight-through quantised vector, the codes ``[batch, levels]`` and the quantisation loss."""
        residual, quantised, codes, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for level in range(self.levels):
            codebook = self.codebooks[level]
            index = torch.cdist(residual.detach(), codebook.detach()).argmin(dim=1)
            chosen = codebook[index]
            loss = loss + F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        straight_through = z + (quantised - z).detach()
        return straight_through, torch.stack(codes, dim=1), loss


class ProductQuantizer(nn.Module):
    """Quantise a vector part by part: level ``l`` codes the ``l``-th of L equal slices of it."""

    def __init__(self, levels: int, codebook_size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        if dim % levels:
            raise ValueError(f"a product quantiser cuts the latent into equal parts: its width ({dim}) must be a "
                             f"multiple of the levels ({levels}).")
        self.levels, self.codebook_size, self.beta = levels, codebook_size, beta
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim // levels) * 0.01)

    def parts(self, z: torch.Tensor) -> torch.Tensor:
        """``[batch, dim]`` -> ``[levels, batch, dim / levels]``."""
        return z.view(len(z), self.levels, -1).transpose(0, 1)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        for level, part in enumerate(self.parts(z)):
            self.codebooks.data[level] = kmeans(part, self.codebook_size, generator=generator)

    @torch.no_grad()
    def restart_unused_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move every code that no vector of ``z`` uses onto a random vector's part at its level."""
        return sum(restart_unused(self.codebooks.data[level], part, generator)[1]
                   for level, part in enumerate(self.parts(z)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised vectors ``[batch, dim]`` of code tuples ``[batch, levels]``: their codes side by side."""
        return self.codebooks[torch.arange(self.levels, device=codes.device), codes].flatten(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the straight-through quantised vector, the codes ``[batch, levels]`` and the quantisation loss
        (summed over the levels, as the residual quantiser's)."""
        parts = self.parts(z)
        codes = torch.cdist(parts.detach(), self.codebooks.detach()).argmin(dim=-1).T  # [batch, levels]
        quantised = self.decode(codes)
        loss = self.levels * (F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(z, quantised.detach()))
        return z + (quantised - z).detach(), codes, loss


QUANTIZERS = {"residual": ResidualQuantizer, "product": ProductQuantizer}


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers += [nn.SiLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder -> quantiser -> decoder; the decoder's output is read by the tokenizer's reconstruction heads."""

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int, levels: int, codebook_size: int,
                 beta: float = 0.25, dropout: float = 0.0, quantizer: str = "residual") -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim], dropout)
        self.quantizer = QUANTIZERS[quantizer](levels, codebook_size, latent_dim, beta)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim], dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (decoded vector, quantised latent, codes, quantisation loss)."""
        latent = self.encoder(x)
        quantised, codes, quant_loss = self.quantizer(latent)
        return self.decoder(quantised), quantised, codes, quant_loss
