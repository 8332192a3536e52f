"""Collaborative-guided fusion, the item tokenizer (fit / encode / de-duplicate) and cold-start mapping."""

from __future__ import annotations

import contextlib

import pytest
import torch

from recbole_cemg.data.features import AlignedFeatures
from recbole_cemg.model.collab_view import CollaborativeView
from recbole_cemg.model.collaborative import content_regression, map_cold_items
from recbole_cemg.model.fusion import CollaborativeGuidedFusion
from recbole_cemg.model.tokenizer import ItemTokenizer, TokenizerInputs, TokenizerViews, deduplicate, unique_rows

DIMS, COLLAB, DIM = [5, 3], 4, 8


def make_fusion(mode: str = "guided", guidance: bool = True, seed: int = 0) -> CollaborativeGuidedFusion:
    torch.manual_seed(seed)
    fusion = CollaborativeGuidedFusion(DIMS, COLLAB, DIM, mode=mode, guidance=guidance)
    return fusion.eval()


def random_inputs(batch: int, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=g) for d in DIMS], torch.randn(batch, COLLAB, generator=g)


def all_present(batch: int) -> list[torch.Tensor]:
    return [torch.ones(batch, dtype=torch.bool) for _ in DIMS]


def tokens(fusion: CollaborativeGuidedFusion, features: list[torch.Tensor]) -> torch.Tensor:
    """The projected modality tokens ``[batch, modalities, dim]``."""
    return torch.stack([proj(x) for proj, x in zip(fusion.projections, features)], dim=1)


# ------------------------------------------------------------------------------------------------ guided fusion
@torch.no_grad()
def test_guided_weights_sum_to_one_and_missing_modalities_get_zero():
    fusion = make_fusion()
    features, collab = random_inputs(6)
    masks = [torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool), torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)]
    fused, weights = fusion(features, masks, collab)
    assert fused.shape == (6, DIM) and weights.shape == (6, 2)
    mask = torch.stack(masks, dim=1)
    has_any = mask.any(1)
    torch.testing.assert_close(weights[has_any].sum(1), torch.ones(int(has_any.sum())))
    assert (weights[~mask] == 0).all()  # exactly zero, not merely small
    assert (weights[mask & has_any.unsqueeze(1)] > 0).all()
    # the fused vector is the weighted sum of the modality tokens
    torch.testing.assert_close(fused, torch.einsum("bm,bmd->bd", weights, tokens(fusion, features)))
    # an item with a single modality is exactly that modality's token
    projected = tokens(fusion, features)
    torch.testing.assert_close(fused[1], projected[1, 0])
    torch.testing.assert_close(fused[2], projected[2, 1])
    # an item with no modality gets zero weights and a zero vector (no NaN)
    assert torch.equal(weights[5], torch.zeros(2)) and torch.equal(fused[5], torch.zeros(DIM))
    assert torch.isfinite(fused).all()


@torch.no_grad()
def test_masking_one_item_changes_nothing_for_the_others():
    fusion = make_fusion()
    features, collab = random_inputs(5)
    full, full_weights = fusion(features, all_present(5), collab)
    masks = all_present(5)
    masks[1] = masks[1].clone()
    masks[1][2] = False  # item 2 loses modality 1
    partial, partial_weights = fusion(features, masks, collab)
    others = torch.tensor([0, 1, 3, 4])
    torch.testing.assert_close(partial[others], full[others], atol=1e-6, rtol=0)
    torch.testing.assert_close(partial_weights[others], full_weights[others], atol=1e-6, rtol=0)
    # ... while item 2 is now fused from modality 0 alone
    assert not torch.allclose(partial[2], full[2])
    assert partial_weights[2].tolist() == [1.0, 0.0]
    # and its missing modality's values do not matter at all
    poisoned = [features[0], features[1].clone()]
    poisoned[1][2] = 1e6
    torch.testing.assert_close(fusion(poisoned, masks, collab)[0], partial, atol=1e-6, rtol=0)


@torch.no_grad()
def test_guidance_gives_each_item_its_own_weights():
    fusion = make_fusion()
    features, collab = random_inputs(6)
    same = [f[:1].expand(6, -1).clone() for f in features]  # six items with identical content
    _, weights = fusion(same, all_present(6), collab)
    # identical content, different collaborative embeddings -> different modality weights
    assert (torch.pdist(weights) > 1e-4).all(), weights
    # identical collaborative embeddings -> identical weights
    _, weights_same_collab = fusion(same, all_present(6), collab[:1].expand(6, -1))
    torch.testing.assert_close(weights_same_collab, weights_same_collab[:1].expand(6, -1))


@torch.no_grad()
def test_popularity_aware_query_moves_weights_with_the_training_count_only_when_asked():
    features, collab = random_inputs(4)
    same = [f[:1].expand(4, -1).clone() for f in features]  # identical items but for how often training saw them
    collab = collab[:1].expand(4, -1)
    counts = torch.tensor([0, 3, 30, 300])
    torch.manual_seed(0)
    aware = CollaborativeGuidedFusion(DIMS, COLLAB, DIM, popularity=True).eval()
    _, weights = aware(same, all_present(4), collab, counts)
    assert (torch.pdist(weights) > 1e-4).all(), weights
    plain = make_fusion()
    _, plain_weights = plain(same, all_present(4), collab, counts)
    torch.testing.assert_close(plain_weights, plain_weights[:1].expand(4, -1))
    # the count enters only through its own learned query direction: with it at zero, the plain fusion is back
    aware.popularity_query.weight.zero_()
    torch.testing.assert_close(aware(same, all_present(4), collab, counts)[1], plain_weights)


@torch.no_grad()
def test_without_guidance_the_collaborative_embedding_is_ignored():
    fusion = make_fusion(guidance=False)
    assert fusion.query is None
    features, collab = random_inputs(6)
    same = [f[:1].expand(6, -1).clone() for f in features]
    _, weights = fusion(same, all_present(6), collab)
    torch.testing.assert_close(weights, weights[:1].expand(6, -1))  # same mask -> same weights for every item
    fused, weights_a = fusion(features, all_present(6), collab)
    fused_b, weights_b = fusion(features, all_present(6), torch.randn(6, COLLAB) * 10)
    assert torch.equal(weights_a, weights_b) and torch.equal(fused, fused_b)
    torch.testing.assert_close(weights_a.sum(1), torch.ones(6))


@torch.no_grad()
def test_mean_fusion_is_uniform_over_present_modalities():
    fusion = make_fusion("mean")
    features, collab = random_inputs(4)
    masks = [torch.tensor([1, 1, 0, 0], dtype=torch.bool), torch.tensor([1, 0, 1, 0], dtype=torch.bool)]
    fused, weights = fusion(features, masks, collab)
    assert fused.shape == (4, DIM)
    assert weights.tolist() == [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    projected = tokens(fusion, features)
    torch.testing.assert_close(fused[0], projected[0].mean(0))
    torch.testing.assert_close(fused[1], projected[1, 0])
    assert torch.equal(fused[3], torch.zeros(DIM))
    # collaborative embeddings play no part
    assert torch.equal(fusion(features, masks, collab * -3)[0], fused)


@torch.no_grad()
def test_concat_fusion_shapes_and_masking():
    fusion = make_fusion("concat")
    features, collab = random_inputs(4)
    masks = [torch.tensor([1, 1, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 1, 1], dtype=torch.bool)]
    fused, weights = fusion(features, masks, collab)
    assert fused.shape == (4, DIM) and weights.shape == (4, 2)
    assert weights.tolist() == [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    projected = tokens(fusion, features)
    kept = [projected[:, m] * masks[m].unsqueeze(1) for m in range(2)]
    expected = fusion.merge(torch.cat(kept, dim=1))
    torch.testing.assert_close(fused, expected)
    # a masked modality's values do not reach the output
    poisoned = [features[0].clone(), features[1]]
    poisoned[0][2] = 1e6
    torch.testing.assert_close(fusion(poisoned, masks, collab)[0], fused)


def test_invalid_fusion_mode_raises():
    with pytest.raises(ValueError, match="`fusion`"):
        CollaborativeGuidedFusion(DIMS, COLLAB, DIM, mode="attention")
    with pytest.raises(ValueError, match="modalit"):
        CollaborativeGuidedFusion([], COLLAB, DIM)


# ----------------------------------------------------------------------------------------------------- tokenizer
N_ITEMS, CLUSTERS = 80, 4


def synthetic_items(seed: int = 0) -> TokenizerInputs:
    """``N_ITEMS`` items (+ padding row 0) in ``CLUSTERS`` clusters, two content modalities and a collab embedding;
    every fifth item lacks the image modality."""
    g = torch.Generator().manual_seed(seed)
    cluster = torch.arange(N_ITEMS + 1) % CLUSTERS
    text = torch.randn(CLUSTERS, 12, generator=g)[cluster] + 0.3 * torch.randn(N_ITEMS + 1, 12, generator=g)
    image = torch.randn(CLUSTERS, 8, generator=g)[cluster] + 0.3 * torch.randn(N_ITEMS + 1, 8, generator=g)
    collab = torch.randn(CLUSTERS, 6, generator=g)[cluster] + 0.3 * torch.randn(N_ITEMS + 1, 6, generator=g)
    text_mask = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    image_mask = torch.arange(N_ITEMS + 1) % 5 != 0
    text_mask[0] = image_mask[0] = False
    return TokenizerInputs([text, image], [text_mask, image_mask], collab)


@contextlib.contextmanager
def one_thread():
    """Tiny models run faster on one thread (no fork/join per op, no contention on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_tokenizer(levels: int = 2, codebook_size: int = 4, quantizer: str = "residual") -> ItemTokenizer:
    torch.manual_seed(0)
    return ItemTokenizer(["text", "image"], [12, 8], collab_dim=6, fusion_dim=16, hidden_dims=[16], latent_dim=4,
                         levels=levels, codebook_size=codebook_size, quantizer=quantizer)


@pytest.fixture(scope="module")
def fitted():
    inputs = synthetic_items()
    tokenizer = make_tokenizer()
    items = torch.arange(1, N_ITEMS + 1)
    with one_thread():
        epochs = tokenizer.fit(inputs, items, epochs=24, learning_rate=1e-2, batch_size=32, eval_step=4,
                               stopping_step=100, show_progress=False, generator=torch.Generator().manual_seed(0))
    return tokenizer, inputs, items, epochs


def test_fit_runs_all_epochs_without_early_stop(fitted):
    tokenizer, _, _, epochs = fitted
    assert epochs == 24
    assert not tokenizer.training  # fit leaves the model in eval mode


def test_encode_codes_shape_range_and_weights(fitted):
    tokenizer, inputs, items, _ = fitted
    encoded = tokenizer.encode(inputs.rows(items), batch_size=17)  # several batches
    codes = encoded["codes"]
    assert codes.shape == (N_ITEMS, 2) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 4
    assert encoded["residual"].shape == (N_ITEMS,) and (encoded["residual"] >= 0).all()
    assert encoded["weights"].shape == (N_ITEMS, 2)
    # items without an image get no image weight
    no_image = ~inputs.masks[1][items]
    assert (encoded["weights"][no_image, 1] == 0).all()
    torch.testing.assert_close(encoded["weights"].sum(1), torch.ones(N_ITEMS))
    # batching does not change the result
    assert torch.equal(tokenizer.encode(inputs.rows(items))["codes"], codes)
    # a trained tokenizer uses more than one code at every level
    assert all(len(torch.unique(codes[:, level])) > 1 for level in range(2))


def test_fit_learns_cluster_prefixes_and_reduces_reconstruction(fitted):
    tokenizer, inputs, items, _ = fitted
    encoded = tokenizer.encode(inputs.rows(items))
    cluster = items % CLUSTERS
    majority = []
    for k in range(CLUSTERS):
        counts = torch.bincount(encoded["codes"][cluster == k, 0], minlength=4)
        majority.append(int(counts.argmax()))
        assert counts.max() >= 0.85 * (cluster == k).sum(), (k, counts)  # a cluster shares its first code
    assert len(set(majority)) == CLUSTERS  # ... and clusters get different first codes
    untrained = make_tokenizer().encode(inputs.rows(items))["reconstruction"]
    assert encoded["reconstruction"] < 0.5 * untrained


def test_product_tokenizer_codes_tell_the_clusters_apart():
    """With the product quantiser no single level need hold the cluster, but the tuple does; the residual norms are
    the latent's distance to its tuple's decoded vector."""
    inputs, items = synthetic_items(), torch.arange(1, N_ITEMS + 1)
    tokenizer = make_tokenizer(quantizer="product")
    with one_thread():
        tokenizer.fit(inputs, items, epochs=24, learning_rate=1e-2, batch_size=32, eval_step=4, stopping_step=100,
                      show_progress=False, generator=torch.Generator().manual_seed(0))
    encoded = tokenizer.encode(inputs.rows(items))
    _, tuple_of = torch.unique(encoded["codes"], dim=0, return_inverse=True)
    cluster = items % CLUSTERS
    pure = sum(int(torch.bincount(cluster[tuple_of == t]).max()) for t in tuple_of.unique())
    assert pure >= 0.9 * N_ITEMS  # items sharing a tuple come from one cluster
    untrained = make_tokenizer(quantizer="product").encode(inputs.rows(items))["reconstruction"]
    assert encoded["reconstruction"] < 0.5 * untrained
    with torch.no_grad():
        latent = tokenizer.rqvae.encoder(tokenizer.fuse(inputs.rows(items))[0])
        decoded = tokenizer.rqvae.quantizer.decode(encoded["codes"])
    torch.testing.assert_close(encoded["residual"], (latent - decoded).norm(dim=1))


def test_deduplicate_gives_every_item_a_unique_tuple(fitted):
    tokenizer, inputs, items, _ = fitted
    encoded = tokenizer.encode(inputs.rows(items))
    codes = encoded["codes"]
    assert unique_rows(codes) < N_ITEMS  # 16 possible tuples for 80 items: collisions are certain
    final = deduplicate(codes, encoded["residual"], dedup_size=N_ITEMS)
    assert final.shape == (N_ITEMS, 3)
    assert unique_rows(final) == N_ITEMS
    assert torch.equal(final[:, :2], codes)  # all semantic codes kept
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    for g in group.unique():
        members = (group == g).nonzero().squeeze(1)
        ranks = final[members, 2]
        assert sorted(ranks.tolist()) == list(range(len(members)))  # 0..size-1, each once
        # rank 0 is the item closest to the tuple's quantisation
        order = torch.argsort(encoded["residual"][members], stable=True)
        assert ranks[order].tolist() == list(range(len(members)))


def test_deduplicate_ranks_by_residual_and_checks_the_group_size():
    codes = torch.tensor([[1, 2], [0, 0], [1, 2], [1, 2], [3, 3]])
    residual = torch.tensor([0.5, 9.0, 0.1, 0.3, 0.0])
    final = deduplicate(codes, residual, dedup_size=3)
    assert final.tolist() == [[1, 2, 2], [0, 0, 0], [1, 2, 0], [1, 2, 1], [3, 3, 0]]
    with pytest.raises(ValueError, match="dedup_size"):
        deduplicate(codes, residual, dedup_size=2)


def test_deduplicate_raises_when_a_fitted_group_exceeds_dedup_size(fitted):
    tokenizer, inputs, items, _ = fitted
    encoded = tokenizer.encode(inputs.rows(items))
    largest = int(torch.unique(encoded["codes"], dim=0, return_counts=True)[1].max())
    assert largest > 1
    deduplicate(encoded["codes"], encoded["residual"], dedup_size=largest)  # exactly fits
    with pytest.raises(ValueError, match="dedup_size"):
        deduplicate(encoded["codes"], encoded["residual"], dedup_size=largest - 1)


def test_fit_is_deterministic():
    results = []
    for _ in range(2):
        tokenizer = make_tokenizer()
        inputs, items = synthetic_items(), torch.arange(1, N_ITEMS + 1)
        with one_thread():
            tokenizer.fit(inputs, items, epochs=3, learning_rate=1e-2, batch_size=32, eval_step=1, stopping_step=10,
                          show_progress=False, generator=torch.Generator().manual_seed(5))
        results.append((tokenizer.encode(inputs.rows(items))["codes"], tokenizer.state_dict()))
    assert torch.equal(results[0][0], results[1][0])
    for name, value in results[0][1].items():
        assert torch.equal(value, results[1][1][name]), name


def test_views_are_independent_fits_whose_tuples_stand_side_by_side():
    """Two views start from their own weights and k-means seeds; the joint tuple is each view's own encoding, the
    codewords decode view by view, and the residual that orders de-duplication adds the views' residuals."""
    inputs, items = synthetic_items(), torch.arange(1, N_ITEMS + 1)
    torch.manual_seed(0)
    views = TokenizerViews([ItemTokenizer(["text", "image"], [12, 8], collab_dim=6, fusion_dim=16, hidden_dims=[16],
                                          latent_dim=4, levels=2, codebook_size=4) for _ in range(2)], levels=[2, 2])
    with one_thread():
        epochs = views.fit(inputs, items, epochs=8, learning_rate=1e-2, batch_size=32, eval_step=4,
                           stopping_step=100, show_progress=False, generator=torch.Generator().manual_seed(0))
    assert epochs == 16  # both views, all epochs
    first, second = (view.encode(inputs.rows(items)) for view in views.views)
    joint = views.encode(inputs.rows(items))
    assert torch.equal(joint["codes"], torch.cat([first["codes"], second["codes"]], dim=1))
    torch.testing.assert_close(joint["residual"], first["residual"] + second["residual"])
    assert not torch.equal(views.views[0].rqvae.quantizer.codebooks[0], views.views[1].rqvae.quantizer.codebooks[0])
    with torch.no_grad():
        decoded = views.decode(joint["codes"])
        assert decoded.shape == (N_ITEMS, 8)
        torch.testing.assert_close(decoded[:, 4:], views.views[1].decode(second["codes"]))
    out = views(inputs.rows(items))  # joint training reads both views' quantised latents
    assert out["quantised"].shape == (N_ITEMS, 8) and out["codes"].shape == (N_ITEMS, 4)
    torch.testing.assert_close(out["loss"], views.views[0](inputs.rows(items))["loss"]
                               + views.views[1](inputs.rows(items))["loss"])


def test_a_view_cut_to_its_first_codes_keeps_them_and_decodes_their_prefix(fitted):
    """One view fitted with two levels keeps its first code only: that code is the tokenizer's own, and its codeword
    is the first level's (the fit's finer level is left out of the tuple and of the decoded latent)."""
    tokenizer, inputs, items, _ = fitted
    cut = TokenizerViews([tokenizer], levels=[1])
    full = tokenizer.encode(inputs.rows(items))
    codes = cut.encode(inputs.rows(items))["codes"]
    assert torch.equal(codes, full["codes"][:, :1])
    with torch.no_grad():
        torch.testing.assert_close(cut.decode(codes), tokenizer.rqvae.quantizer.codebooks[0][codes[:, 0]])
        torch.testing.assert_close(tokenizer.decode(full["codes"]),
                                   cut.decode(codes) + tokenizer.rqvae.quantizer.codebooks[1][full["codes"][:, 1]])


def test_collaborative_view_codes_the_unit_collaborative_embedding_beside_a_fused_view(fitted):
    """The collaborative view groups items by their collaborative embedding alone (its first code follows the
    synthetic clusters of that embedding), ignores its scale, trains nothing, and sits beside a fused view without
    changing what the report reads of the fused one (fusion weights, reconstruction)."""
    tokenizer, inputs, items, _ = fitted
    view = CollaborativeView(collab_dim=6, levels=2, codebook_size=CLUSTERS)
    assert view.fit(inputs, items, 5, 1e-2, generator=torch.Generator().manual_seed(0)) == 0
    assert not any(p.requires_grad for p in view.parameters())
    codes = view.encode(inputs.rows(items))["codes"]
    cluster = items % CLUSTERS
    for c in range(CLUSTERS):  # one first code per cluster, not shared with another cluster
        first = codes[cluster == c, 0]
        assert (first == first.mode().values).float().mean() >= 0.9
    assert len(torch.unique(codes[:, 0])) == CLUSTERS
    scaled = TokenizerInputs(inputs.features, inputs.masks, 3.0 * inputs.collab)
    assert torch.equal(view.encode(scaled.rows(items))["codes"], codes)

    views = TokenizerViews([tokenizer, view], levels=[2, 1])  # each view keeps its own number of codes
    joint, fused = views.encode(inputs.rows(items)), tokenizer.encode(inputs.rows(items))
    assert torch.equal(joint["codes"], torch.cat([fused["codes"], codes[:, :1]], dim=1))
    torch.testing.assert_close(joint["weights"], fused["weights"])
    assert joint["reconstruction"] == pytest.approx(fused["reconstruction"])
    with torch.no_grad():
        decoded = views.decode(joint["codes"])
        torch.testing.assert_close(decoded[:, -6:], view.quantizer.codebooks[0][codes[:, 0]])
    out = view(inputs.rows(items))
    assert out["loss"] == 0 and not out["quantised"].requires_grad
    torch.testing.assert_close(out["quantised"], view.decode(codes))


# ----------------------------------------------------------------------------------------------------- cold start
def content(values: torch.Tensor, mask: torch.Tensor | None = None) -> AlignedFeatures:
    mask = torch.ones(len(values), dtype=torch.bool) if mask is None else mask
    return AlignedFeatures("text", values, mask)


def test_map_cold_items_recovers_a_linear_map_and_keeps_warm_rows():
    g = torch.Generator().manual_seed(0)
    n, d_content, d_collab = 41, 5, 3
    values = torch.randn(n, d_content, generator=g)
    weights, bias = torch.randn(d_content, d_collab, generator=g), torch.randn(d_collab, generator=g)
    truth = values @ weights + bias
    warm = torch.ones(n, dtype=torch.bool)
    cold_ids = torch.tensor([3, 10, 17, 33])
    warm[cold_ids] = False
    warm[0] = False  # padding row: never treated as cold
    embeddings = truth.clone()
    embeddings[cold_ids] = 0.0  # untrained
    embeddings[0] = 7.0  # padding row's value must survive
    result = map_cold_items(embeddings, warm, [content(values)], ridge=1e-4)
    torch.testing.assert_close(result[cold_ids], truth[cold_ids], atol=1e-3, rtol=0)
    assert torch.equal(result[warm], embeddings[warm])
    assert torch.equal(result[0], embeddings[0])
    assert torch.equal(embeddings[cold_ids], torch.zeros(4, d_collab))  # input not modified
    assert not warm[cold_ids].any() and not warm[0]  # mask argument not modified either


def test_map_cold_items_without_cold_items_or_content():
    embeddings = torch.arange(12.0).view(4, 3)
    warm = torch.tensor([False, True, True, True])
    assert torch.equal(map_cold_items(embeddings, warm, []), embeddings)  # only the padding row is "cold"
    warm = torch.tensor([False, True, False, True])
    result = map_cold_items(embeddings, warm, [])
    torch.testing.assert_close(result[2], embeddings[[1, 3]].mean(0))
    assert torch.equal(result[[0, 1, 3]], embeddings[[0, 1, 3]])


def test_content_regression_predicts_known_rows_out_of_fold():
    """Embeddings unrelated to the content: a fit that saw a row predicts it well (overfitting), one that left it
    out cannot, just as it cannot for a cold item."""
    g = torch.Generator().manual_seed(0)
    n = 121
    values, embeddings = torch.randn(n, 40, generator=g), torch.randn(n, 4, generator=g)
    known = torch.arange(n) > 0

    def r2(predicted: torch.Tensor) -> float:
        truth = embeddings[known]
        return float(1 - (predicted[known] - truth).pow(2).sum() / (truth - truth.mean(0)).pow(2).sum())

    assert r2(content_regression(embeddings, known, [content(values)])) > 0.25
    assert r2(content_regression(embeddings, known, [content(values)], folds=5)) < 0.0
    truth = values[:, :4] * 2.0  # a real linear relation survives out-of-fold prediction
    oof = content_regression(truth, known, [content(values)], ridge=1e-4, folds=5)
    torch.testing.assert_close(oof[known], truth[known], atol=1e-3, rtol=0)


def cold_start_items(seed: int = 0) -> tuple[TokenizerInputs, TokenizerInputs, torch.Tensor, torch.Tensor]:
    """160 items in 8 content clusters, every fifth held out of training: its collaborative embedding is the
    content prediction (shrunk toward the mean), as in a cold-start run. Returns the inputs, every item seen as a
    cold item (out-of-fold content predictions), the cold mask and the clusters."""
    n, clusters = 160, 8
    g = torch.Generator().manual_seed(seed)
    cluster = torch.arange(n + 1) % clusters
    text = torch.randn(clusters, 12, generator=g)[cluster] + 0.5 * torch.randn(n + 1, 12, generator=g)
    collab = torch.randn(clusters, 6, generator=g)[cluster] + 0.3 * torch.randn(n + 1, 6, generator=g)
    mask = torch.arange(n + 1) > 0
    cold = (torch.arange(n + 1) % 5 == 1)
    features = [content(text, mask)]
    collab[cold] = content_regression(collab, mask & ~cold, features, ridge=30.0)[cold]
    predicted = content_regression(collab, mask & ~cold, features, ridge=30.0, folds=5)
    return (TokenizerInputs([text, collab], [mask, mask], collab),
            TokenizerInputs([text, predicted], [mask, mask], predicted), cold, cluster)


def test_cold_simulation_puts_held_out_items_in_the_code_cells_of_their_warm_neighbours():
    inputs, cold_view, cold, cluster = cold_start_items()
    warm = ~cold & (torch.arange(len(cold)) > 0)

    def share_in_cluster_cell(rate: float) -> float:
        torch.manual_seed(0)
        tokenizer = ItemTokenizer(["text", "collab"], [12, 6], collab_dim=6, fusion_dim=16, hidden_dims=[16],
                                  latent_dim=4, levels=2, codebook_size=8)
        with one_thread():
            tokenizer.fit(inputs, torch.arange(1, len(cold)), epochs=30, learning_rate=1e-2, batch_size=32,
                          eval_step=5, stopping_step=100, show_progress=False,
                          generator=torch.Generator().manual_seed(0), cold_view=cold_view, cold_simulation=rate)
        first = tokenizer.encode(inputs)["codes"][:, 0]
        majority = {int(c): int(first[warm & (cluster == c)].mode().values) for c in cluster.unique()}
        return sum(int(first[i]) == majority[int(cluster[i])] for i in torch.nonzero(cold).flatten()) / int(cold.sum())

    without, simulated = share_in_cluster_cell(0.0), share_in_cluster_cell(0.5)
    assert simulated >= 0.9 and simulated > without + 0.05, (without, simulated)


def test_where_takes_the_masked_rows_from_the_other_view():
    inputs, cold_view, cold, _ = cold_start_items()
    inputs.popularity = torch.arange(len(cold))
    cold_view.popularity = torch.zeros(len(cold), dtype=torch.long)
    mixed = inputs.where(cold, cold_view)
    assert torch.equal(mixed.collab[cold], cold_view.collab[cold])
    assert torch.equal(mixed.collab[~cold], inputs.collab[~cold])
    assert torch.equal(mixed.features[1], mixed.collab) and torch.equal(mixed.features[0], inputs.features[0])
    assert torch.equal(mixed.popularity, torch.where(cold, 0, inputs.popularity))
