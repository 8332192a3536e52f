"""Item tokenizer: fuse each item's modalities under collaborative guidance, quantise with an RQ-VAE, and give every
item a unique code tuple.

Training signal (one loss, minimised jointly by the fusion layer and the RQ-VAE):

* reconstruction of every available modality of the item (unit-normalised, squared error summed over dimensions,
  missing modalities masked), so the codes must carry what each modality says about the item;
* codebook + 0.25 x commitment loss of the quantiser (residual, or product: ``rqvae.py``);
* collaborative alignment (LETTER): in-batch InfoNCE between the quantised latent and the item's collaborative
  embedding, so items that are co-consumed share code prefixes.

Collisions (items with the same L codes) get one extra de-duplication level, as in TIGER: the items sharing a tuple
are ranked by how close they are to its quantisation, and the rank is their last code. Unlike re-assignment this keeps
all L semantic codes of every item intact, and it cannot fail while a group is smaller than the extra level's size.

``TokenizerViews`` fits several such tokenizers independently on the same items and puts their tuples side by side
(``tokenizer_views``), each cut to its first codes if asked (``view_levels``): each fit partitions the items
differently, and an item's cells in two partitions single it out among far fewer neighbours than one partition's cell
does. One of the views may code the collaborative embedding alone (``collab_view``, ``collab_view.py``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from logging import getLogger

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from recbole_cemg.errors import InputError
from recbole_cemg.model.fusion import CollaborativeGuidedFusion
from recbole_cemg.model.rqvae import RQVAE


@dataclass
class TokenizerInputs:
    """Per-item inputs of the tokenizer, indexed by internal item id (row 0 is the padding item)."""

    features: list[torch.Tensor]
    masks: list[torch.Tensor]
    collab: torch.Tensor
    popularity: torch.Tensor | None = None  # training interactions per item (popularity-aware fusion)

    def rows(self, index: torch.Tensor) -> TokenizerInputs:
        return TokenizerInputs([f[index] for f in self.features], [m[index] for m in self.masks], self.collab[index],
                               None if self.popularity is None else self.popularity[index])

    def where(self, mask: torch.Tensor, other: TokenizerInputs) -> TokenizerInputs:
        """Row ``i`` of ``other`` where ``mask[i]``, else of this one (the same items seen two ways)."""
        def pick(mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
            return torch.where(mask.view(-1, *[1] * (mine.dim() - 1)), theirs, mine)

        return TokenizerInputs([pick(a, b) for a, b in zip(self.features, other.features)],
                               [pick(a, b) for a, b in zip(self.masks, other.masks)], pick(self.collab, other.collab),
                               None if self.popularity is None else pick(self.popularity, other.popularity))

    def to(self, device) -> TokenizerInputs:
        return TokenizerInputs([f.to(device) for f in self.features], [m.to(device) for m in self.masks],
                               self.collab.to(device), None if self.popularity is None else self.popularity.to(device))


@dataclass
class TokenizerReport:
    """What a reviewer asks of a tokenizer: collisions, code usage, entropy, reconstruction error."""

    items: int
    unique_before_dedup: int
    collisions: int
    collision_rate: float
    max_items_per_tuple: int
    unique_after_dedup: int
    reconstruction_error: float
    usage: list[float] = field(default_factory=list)
    entropy_bits: list[float] = field(default_factory=list)
    used_codes: list[int] = field(default_factory=list)
    epochs: int = 0
    modality_weights: dict[str, float] = field(default_factory=dict)


class ItemTokenizer(nn.Module):
    def __init__(self, modality_names: list[str], modality_dims: list[int], collab_dim: int, fusion_dim: int,
                 hidden_dims: list[int], latent_dim: int, levels: int, codebook_size: int, fusion: str = "guided",
                 guidance: bool = True, beta: float = 0.25, align_weight: float = 0.1,
                 align_temperature: float = 0.1, dropout: float = 0.0, popularity: bool = False,
                 quantizer: str = "residual") -> None:
        super().__init__()
        self.modality_names = modality_names
        self.align_weight, self.align_temperature = align_weight, align_temperature
        self.fusion = CollaborativeGuidedFusion(modality_dims, collab_dim, fusion_dim, fusion, guidance, popularity)
        self.rqvae = RQVAE(fusion_dim, hidden_dims, latent_dim, levels, codebook_size, beta, dropout, quantizer)
        self.heads = nn.ModuleList(nn.Linear(fusion_dim, d) for d in modality_dims)
        self.align = nn.Linear(latent_dim, collab_dim)

    def fuse(self, inputs: TokenizerInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fusion(inputs.features, inputs.masks, inputs.collab, inputs.popularity)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised latent ``[n, latent_dim]`` of code tuples ``[n, levels]``: the sum of their codewords."""
        return self.rqvae.quantizer.decode(codes)

    def forward(self, inputs: TokenizerInputs, targets: TokenizerInputs | None = None) -> dict[str, torch.Tensor]:
        """Fuse and quantise ``inputs``; reconstruct and align to ``targets`` (default: the inputs), which the cold
        simulation keeps at the item's own modalities while the fusion sees it as a cold-start item."""
        targets = inputs if targets is None else targets
        fused, weights = self.fuse(inputs)
        decoded, quantised, codes, quant_loss = self.rqvae(fused)
        reconstruction = fused.new_zeros(())
        for head, target, mask in zip(self.heads, targets.features, targets.masks):
            error = (head(decoded) - F.normalize(target, dim=-1)).pow(2).sum(-1)
            reconstruction = reconstruction + (error * mask).sum() / mask.sum().clamp(min=1)
        logits = F.normalize(self.align(quantised), dim=-1) @ F.normalize(targets.collab, dim=-1).T
        labels = torch.arange(len(logits), device=logits.device)
        alignment = F.cross_entropy(logits / self.align_temperature, labels)
        loss = reconstruction + quant_loss + self.align_weight * alignment
        return {"loss": loss, "reconstruction": reconstruction, "quantisation": quant_loss, "alignment": alignment,
                "codes": codes, "weights": weights, "latent": self.rqvae.encoder(fused), "quantised": quantised}

    @torch.no_grad()
    def encode(self, inputs: TokenizerInputs, batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """Codes ``[items, levels]``, residual norms, fusion weights and mean reconstruction error of every row."""
        was_training = self.training
        self.eval()
        codes, residual, weights, reconstruction = [], [], [], 0.0
        n = len(inputs.collab)
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n), device=inputs.collab.device)
            out = self.forward(inputs.rows(index))
            quantised = self.decode(out["codes"])
            codes.append(out["codes"])
            residual.append((out["latent"] - quantised).norm(dim=1))
            weights.append(out["weights"])
            reconstruction += out["reconstruction"].item() * len(index)
        self.train(was_training)
        return {"codes": torch.cat(codes), "residual": torch.cat(residual), "weights": torch.cat(weights),
                "reconstruction": reconstruction / n}

    def fit(self, inputs: TokenizerInputs, items: torch.Tensor, epochs: int, learning_rate: float, batch_size: int,
            eval_step: int, stopping_step: int, weight_decay: float = 0.0, show_progress: bool = True,
            generator: torch.Generator | None = None, cold_view: TokenizerInputs | None = None,
            cold_simulation: float = 0.0) -> int:
        """Train on ``items`` (internal ids), k-means-initialising the codebooks first.

        Cold simulation (DropoutNet's idea): each batch fuses a ``cold_simulation`` share of its items from
        ``cold_view``, i.e. as a cold-start item is seen (collaborative embedding predicted from content), and trains
        them toward their own modalities. A cold item's content-predicted embedding is much closer to the mean than
        a trained one; without this its codes crowd into the few cells near the centre, which no warm item trains.

        Early stopping on reconstruction error + collision rate, evaluated every ``eval_step`` epochs; the best
        state is restored. Returns the number of epochs run.
        """
        logger = getLogger()
        self.train()
        with torch.no_grad():
            fused, _ = self.fuse(inputs.rows(items))
            self.rqvae.quantizer.kmeans_init(self.rqvae.encoder(fused), generator=generator)
        optimizer = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=learning_rate,
                                      weight_decay=weight_decay)
        best_score, best_state, bad_evals, epoch = math.inf, copy.deepcopy(self.state_dict()), 0, 0
        progress = tqdm(range(epochs), desc="Tokenizer", ncols=100, disable=not show_progress)
        for epoch in progress:
            order = items[torch.randperm(len(items), generator=generator, device=items.device)]
            total = 0.0
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                seen = targets = inputs.rows(batch)
                if cold_view is not None and cold_simulation:
                    simulated = torch.rand(len(batch), generator=generator, device=batch.device) < cold_simulation
                    seen = targets.where(simulated, cold_view.rows(batch))
                out = self.forward(seen, targets)
                optimizer.zero_grad()
                out["loss"].backward()
                optimizer.step()
                total += out["loss"].item()
            with torch.no_grad():
                latent = self.rqvae.encoder(self.fuse(inputs.rows(items))[0])
                self.rqvae.quantizer.restart_unused_codes(latent, generator)
            if (epoch + 1) % eval_step and epoch + 1 < epochs:
                continue
            encoded = self.encode(inputs.rows(items))
            collision_rate = 1.0 - unique_rows(encoded["codes"]) / len(items)
            score = encoded["reconstruction"] + collision_rate
            progress.set_postfix(loss=f"{total:.3f}", recon=f"{encoded['reconstruction']:.3f}",
                                 collisions=f"{collision_rate:.3f}")
            logger.debug(f"tokenizer epoch {epoch}: loss {total:.4f}, reconstruction "
                         f"{encoded['reconstruction']:.4f}, collision rate {collision_rate:.4f}")
            if score < best_score - 1e-4:
                best_score, best_state, bad_evals = score, copy.deepcopy(self.state_dict()), 0
            else:
                bad_evals += 1
                if bad_evals >= stopping_step:
                    logger.info(f"tokenizer: early stop at epoch {epoch}, best score {best_score:.4f}")
                    break
        self.load_state_dict(best_state)
        self.eval()
        return epoch + 1


class TokenizerViews(nn.Module):
    """Independently fitted tokenizers of the same items, read as one: an item's code tuple is their tuples side by
    side, view after view, the first ``levels[v]`` codes of view ``v`` (a residual quantiser's leading codes are its
    coarse cells; the views may fit more levels than they keep).

    Why: two fits of one tokenizer on Beauty put only about a fifth of the item pairs that share a first code in one
    view into one first-code cell of the other, so an item's pair of cells holds far fewer items than either cell.
    The generator still ranks items by the log-probability of their (longer) code tuple.

    A view is an ``ItemTokenizer`` or anything with its ``fit`` / ``encode`` / ``decode`` / ``forward``, such as
    ``CollaborativeView``; the first view must be an ``ItemTokenizer`` (its modality names label the report)."""

    def __init__(self, views: list[nn.Module], levels: list[int]) -> None:
        super().__init__()
        self.views = nn.ModuleList(views)
        self.levels = levels
        self.modality_names = views[0].modality_names

    def forward(self, inputs: TokenizerInputs, targets: TokenizerInputs | None = None) -> dict[str, torch.Tensor]:
        """Joint training: every view's loss summed, their codes and quantised latents side by side."""
        outs = [view(inputs, targets) for view in self.views]
        return {"loss": sum(out["loss"] for out in outs),
                "codes": self.kept_codes(outs),
                "quantised": torch.cat([out["quantised"] for out in outs], dim=1)}

    def kept_codes(self, outs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The views' outputs' codes, each cut to the levels it keeps, side by side ``[n, sum(levels)]``."""
        return torch.cat([out["codes"][:, :levels] for out, levels in zip(outs, self.levels)], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Each view's quantised latent of its share of the tuples ``[n, sum(levels)]``, side by side."""
        return torch.cat([view.decode(part) for view, part in zip(self.views, codes.split(self.levels, dim=-1))],
                         dim=-1)

    @torch.no_grad()
    def encode(self, inputs: TokenizerInputs, batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """The views' (kept) codes side by side; residual norms (of all the levels each view fits) summed, the
        de-duplication order; fusion weights and reconstruction error averaged over the fused views."""
        outs = [view.encode(inputs, batch_size) for view in self.views]
        fused = [out for out in outs if "weights" in out]  # not the collaborative view (collab_view.py)
        return {"codes": self.kept_codes(outs),
                "residual": sum(out["residual"] for out in outs),
                "weights": sum(out["weights"] for out in fused) / len(fused),
                "reconstruction": sum(out["reconstruction"] for out in fused) / len(fused)}

    def fit(self, *args, **kwargs) -> int:
        """Fit the views one after the other (``ItemTokenizer.fit``'s arguments; a shared random ``generator``
        moves on, so each view starts from its own k-means seeds); returns the epochs of all views together."""
        return sum(view.fit(*args, **kwargs) for view in self.views)


def unique_rows(codes: torch.Tensor) -> int:
    return len(torch.unique(codes, dim=0))


def deduplicate(codes: torch.Tensor, residual: torch.Tensor, dedup_size: int) -> torch.Tensor:
    """Append a level that tells apart items sharing a code tuple (rank by residual norm, closest first)."""
    order = torch.argsort(residual, stable=True)
    _, group = torch.unique(codes[order], dim=0, return_inverse=True)
    rank_sorted = torch.zeros_like(group)
    seen: dict[int, int] = {}
    for position, g in enumerate(group.tolist()):
        rank_sorted[position] = seen.get(g, 0)
        seen[g] = seen.get(g, 0) + 1
    ranks = torch.empty_like(rank_sorted)
    ranks[order] = rank_sorted
    largest = int(ranks.max()) + 1 if len(ranks) else 0
    if largest > dedup_size:
        raise InputError(f"The tokenizer put {largest} items on one code tuple, more than the de-duplication level "
                         f"holds (`dedup_size` = {dedup_size}). The codebooks have collapsed: train the tokenizer "
                         "longer (`tokenizer_epochs`), raise `codebook_size`, or raise `dedup_size`.")
    return torch.cat([codes, ranks.unsqueeze(1)], dim=1)


def code_usage(codes: torch.Tensor, level_sizes: list[int]) -> tuple[list[float], list[float], list[int]]:
    """Per level: share of the codebook in use, entropy (bits) of the code distribution, and used-code count."""
    usage, entropy, used = [], [], []
    for level, size in enumerate(level_sizes):
        counts = torch.bincount(codes[:, level], minlength=size).float()
        p = counts[counts > 0] / counts.sum()
        used.append(int((counts > 0).sum()))
        usage.append(used[-1] / size)
        entropy.append(float(-(p * p.log2()).sum()))
    return usage, entropy, used
