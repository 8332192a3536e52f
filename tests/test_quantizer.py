"""k-means, the residual and product quantisers (init, forward, straight-through, dead-code restart) and code-usage
statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recbole_cemg.model.rqvae import ProductQuantizer, ResidualQuantizer, kmeans
from recbole_cemg.model.tokenizer import code_usage

BLOB_CENTRES = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, -10.0]])


def blobs(per_blob: int = 50, std: float = 0.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    points = [c + std * torch.randn(per_blob, 2, generator=g) for c in BLOB_CENTRES]
    return torch.cat(points)


def gaussian(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def nearest_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact distance of each row of ``a`` to its nearest row of ``b`` (``cdist`` rounds through a matmul)."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).norm(dim=-1).min(dim=1).values


# --------------------------------------------------------------------------------------------------------- kmeans
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_finds_every_blob(seed):
    x = blobs(seed=seed)
    centroids = kmeans(x, 4, generator=torch.Generator().manual_seed(seed))
    assert centroids.shape == (4, 2)
    distance = torch.cdist(BLOB_CENTRES, centroids)  # [blob, centroid]
    # Each blob centre has its own centroid close by (k-means++ seeding covers all 4 blobs).
    assert (distance.min(dim=1).values < 0.3).all(), distance
    assert sorted(distance.argmin(dim=1).tolist()) == [0, 1, 2, 3]
    # And each centroid is the mean of its blob (Lloyd converged).
    for blob in range(4):
        members = x[blob * 50:(blob + 1) * 50]
        torch.testing.assert_close(centroids[distance[blob].argmin()], members.mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n,k", [(3, 7), (5, 5), (1, 4)])
def test_kmeans_with_few_points_returns_k_data_points(n, k):
    x = gaussian(n, 3, seed=n)
    centroids = kmeans(x, k, generator=torch.Generator().manual_seed(0))
    assert centroids.shape == (k, 3)
    # every centroid is one of the data points, and every data point is used
    match = (centroids.unsqueeze(1) - x.unsqueeze(0)).abs().sum(-1) == 0
    assert match.any(dim=1).all()
    assert match.any(dim=0).all()
    # the result is a copy, not a view of the input
    centroids[0] += 1.0
    assert torch.equal(x, gaussian(n, 3, seed=n))


def test_kmeans_is_deterministic_under_a_seeded_generator():
    x = gaussian(120, 4, seed=3)
    a = kmeans(x, 6, generator=torch.Generator().manual_seed(11))
    b = kmeans(x, 6, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- residual quantiser
def chosen_codes(quantizer: ResidualQuantizer, codes: torch.Tensor, levels: int) -> torch.Tensor:
    """Sum of the code vectors of the first ``levels`` levels."""
    index = torch.arange(levels)
    return quantizer.codebooks.detach()[index, codes[:, :levels]].sum(1)


def test_kmeans_init_then_forward_codes_and_reconstruction():
    torch.manual_seed(0)
    z = gaussian(300, 6, seed=1)
    quantizer = ResidualQuantizer(levels=4, codebook_size=8, dim=6)
    quantizer.kmeans_init(z, generator=torch.Generator().manual_seed(0))
    quantised, codes, loss = quantizer(z)

    assert codes.shape == (300, 4) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    # k-means init on the latents: every code of the first level is used
    assert len(torch.unique(codes[:, 0])) == 8
    # the forward value is the sum of the chosen codes
    torch.testing.assert_close(quantised.detach(), chosen_codes(quantizer, codes, 4), atol=1e-5, rtol=1e-5)
    # every level refines the previous one
    errors = [(z - chosen_codes(quantizer, codes, level)).pow(2).sum(1).mean().item() for level in range(1, 5)]
    baseline = z.pow(2).sum(1).mean().item()
    assert baseline > errors[0] > errors[1] > errors[2] > errors[3], (baseline, errors)
    assert errors[3] < 0.5 * errors[0]
    # the reported loss is codebook + beta * commitment = (1 + beta) * sum of the per-level squared residuals
    assert loss.item() > 0
    residual, expected = z, 0.0
    for level in range(4):
        chosen = quantizer.codebooks.detach()[level, codes[:, level]]
        expected += 1.25 * (chosen - residual).pow(2).mean().item()
        residual = residual - chosen
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_codes_are_nearest_codes_level_by_level():
    z = gaussian(64, 3, seed=5)
    quantizer = ResidualQuantizer(levels=2, codebook_size=5, dim=3)
    quantizer.kmeans_init(z, generator=torch.Generator().manual_seed(1))
    _, codes, _ = quantizer(z)
    books = quantizer.codebooks.detach()
    first = torch.cdist(z, books[0]).argmin(1)
    assert torch.equal(codes[:, 0], first)
    second = torch.cdist(z - books[0][first], books[1]).argmin(1)
    assert torch.equal(codes[:, 1], second)


def test_straight_through_gradient_reaches_the_input():
    z = gaussian(32, 4, seed=2).requires_grad_(True)
    quantizer = ResidualQuantizer(levels=2, codebook_size=4, dim=4)
    quantizer.kmeans_init(z.detach(), generator=torch.Generator().manual_seed(0))
    quantised, _, loss = quantizer(z)
    weights = gaussian(32, 4, seed=9)
    (quantised * weights).sum().backward()
    # d(straight-through)/dz is the identity: the gradient passes the quantiser unchanged
    torch.testing.assert_close(z.grad, weights)
    assert quantizer.codebooks.grad is None or torch.count_nonzero(quantizer.codebooks.grad) == 0

    z.grad = None
    loss.backward()
    # the commitment term pulls the input towards its codes, the codebook term pulls the codes
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert quantizer.codebooks.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- dead-code restart
def collapsed_quantizer(z: torch.Tensor, codebook_size: int, levels: int = 1,
                        kind: type[nn.Module] = ResidualQuantizer) -> nn.Module:
    quantizer = kind(levels=levels, codebook_size=codebook_size, dim=z.shape[1])
    with torch.no_grad():
        quantizer.codebooks.fill_(1000.0)  # far from every point
        quantizer.codebooks[:, 0] = 0.0  # one live code per level, at the data's centre
    return quantizer


def used_codes(quantizer: ResidualQuantizer, z: torch.Tensor) -> list[int]:
    _, codes, _ = quantizer(z)
    return [len(torch.unique(codes[:, level])) for level in range(quantizer.levels)]


def test_restart_unused_codes_revives_a_collapsed_codebook():
    z = gaussian(100, 2, seed=4)
    quantizer = collapsed_quantizer(z, codebook_size=8)
    assert used_codes(quantizer, z) == [1]

    moved = quantizer.restart_unused_codes(z, generator=torch.Generator().manual_seed(0))
    assert moved == 7
    books = quantizer.codebooks.detach()
    assert torch.equal(books[0, 0], torch.zeros(2))  # the used code stays
    assert (nearest_distance(books[0, 1:], z) == 0).all()  # dead codes now sit on data points
    assert used_codes(quantizer, z) == [8]
    # nothing left to restart
    assert quantizer.restart_unused_codes(z, generator=torch.Generator().manual_seed(0)) == 0


def test_restart_unused_codes_uses_residuals_at_deeper_levels():
    z = gaussian(100, 2, seed=6)
    quantizer = collapsed_quantizer(z, codebook_size=6, levels=2)
    assert used_codes(quantizer, z) == [1, 1]
    moved = quantizer.restart_unused_codes(z, generator=torch.Generator().manual_seed(3))
    assert moved == 10
    usage = used_codes(quantizer, z)
    assert usage[0] > 1 and usage[1] > 1
    # the second level's new codes are residuals of the first level, not raw inputs
    _, codes, _ = quantizer(z)
    residual = z - quantizer.codebooks.detach()[0, codes[:, 0]]
    assert (nearest_distance(quantizer.codebooks.detach()[1, 1:], residual) < 1e-6).all()


# ---------------------------------------------------------------------------------------------- product quantiser
def test_product_codes_are_each_slices_nearest_code_and_the_vector_is_their_concatenation():
    z = gaussian(200, 6, seed=7)
    quantizer = ProductQuantizer(levels=3, codebook_size=5, dim=6)
    quantizer.kmeans_init(z, generator=torch.Generator().manual_seed(0))
    quantised, codes, loss = quantizer(z)
    books = quantizer.codebooks.detach()
    assert books.shape == (3, 5, 2) and codes.shape == (200, 3)
    for level in range(3):
        part = z[:, 2 * level:2 * level + 2]
        assert torch.equal(codes[:, level], torch.cdist(part, books[level]).argmin(1))
        assert len(torch.unique(codes[:, level])) == 5  # k-means init on that slice: every code in use
    expected = torch.cat([books[level, codes[:, level]] for level in range(3)], dim=1)
    torch.testing.assert_close(quantised.detach(), expected)
    torch.testing.assert_close(quantizer.decode(codes).detach(), expected)
    # codebook + beta * commitment, summed over the levels like the residual quantiser's
    per_level = [(expected[:, 2 * level:2 * level + 2] - z[:, 2 * level:2 * level + 2]).pow(2).mean().item()
                 for level in range(3)]
    assert loss.item() == pytest.approx(1.25 * sum(per_level), rel=1e-4)


def test_product_levels_code_independent_parts():
    """Two slices that cluster independently: each level recovers its own slice's clusters and ignores the other."""
    first, second = blobs(seed=1), blobs(seed=2)[torch.randperm(200, generator=torch.Generator().manual_seed(3))]
    z = torch.cat([first, second], dim=1)
    quantizer = ProductQuantizer(levels=2, codebook_size=4, dim=4)
    quantizer.kmeans_init(z, generator=torch.Generator().manual_seed(0))
    _, codes, _ = quantizer(z)
    for level, part in enumerate((first, second)):
        blob = torch.cdist(part, BLOB_CENTRES).argmin(1)
        pairs = torch.unique(torch.stack([codes[:, level], blob], dim=1), dim=0)
        assert len(pairs) == 4  # one code per blob of this slice, whatever the other slice does


def test_product_straight_through_and_restart_per_slice():
    z = gaussian(60, 4, seed=8).requires_grad_(True)
    quantizer = collapsed_quantizer(z, codebook_size=6, levels=2, kind=ProductQuantizer)
    weights = gaussian(60, 4, seed=9)
    (quantizer(z)[0] * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)
    assert quantizer.restart_unused_codes(z.detach(), generator=torch.Generator().manual_seed(0)) == 10
    for level in range(2):  # the revived codes sit on that level's slice of data points
        part = z.detach()[:, 2 * level:2 * level + 2]
        assert (nearest_distance(quantizer.codebooks.detach()[level, 1:], part) == 0).all()
    assert [len(torch.unique(c)) for c in quantizer(z.detach())[1].T] == [6, 6]


def test_product_quantiser_needs_equal_parts():
    with pytest.raises(ValueError, match="multiple of the levels"):
        ProductQuantizer(levels=3, codebook_size=4, dim=4)


def test_residual_decode_is_the_forward_value():
    z = gaussian(50, 3, seed=10)
    quantizer = ResidualQuantizer(levels=3, codebook_size=4, dim=3)
    quantizer.kmeans_init(z, generator=torch.Generator().manual_seed(0))
    quantised, codes, _ = quantizer(z)
    torch.testing.assert_close(quantizer.decode(codes).detach(), quantised.detach(), atol=1e-6, rtol=1e-6)


# -------------------------------------------------------------------------------------------------- code usage
def test_code_usage_detects_a_collapsed_level():
    codes = torch.stack([torch.zeros(40, dtype=torch.long),  # collapsed: one code for all items
                         torch.arange(40) % 8,  # uniform over all 8 codes
                         torch.arange(40) % 2], dim=1)  # uniform over 2 of 8 codes
    usage, entropy, used = code_usage(codes, [8, 8, 8])
    assert used == [1, 8, 2]
    assert usage == pytest.approx([1 / 8, 1.0, 2 / 8])
    assert entropy[0] == pytest.approx(0.0, abs=1e-7)
    assert entropy[1] == pytest.approx(math.log2(8), abs=1e-6)
    assert entropy[2] == pytest.approx(1.0, abs=1e-6)


def test_code_usage_entropy_of_a_skewed_level():
    codes = torch.tensor([[0], [0], [0], [1]])
    usage, entropy, used = code_usage(codes, [4])
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert used == [2] and usage == [0.5]
    assert entropy[0] == pytest.approx(expected, abs=1e-6)
