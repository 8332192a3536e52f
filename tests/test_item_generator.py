"""The item-level generator: exact scores are proper log-probabilities of the code tuples, causal states, training
that learns a sequence pattern; in CEMG: score fusion chosen on the validation split, and joint training that reaches
the tokenizer."""

from __future__ import annotations

import itertools
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recbole_cemg.compare import fusion_row, load_runs, summarise, write_outputs
from recbole_cemg.evaluation import store_user_results
from recbole_cemg.model.item_generator import ItemLevelGenerator
from recbole_cemg.model.next_item import ItemSequence
from recbole_cemg.model.rqvae import ResidualQuantizer
from recbole_cemg.model.tokenizer import unique_rows
from recbole_cemg.quick_start import run_cemg
from tests.conftest import ROOT, TINY_CONFIG, code_catalogue, load_script

LEVELS = [4, 3, 2]
N_ITEMS = 20
LLM_CONFIG = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2}


def generator(code_loss: str, seed: int = 0, n_items: int = 0, levels: list[int] = LEVELS,
              **options) -> ItemLevelGenerator:
    """A tiny generator over ``N_ITEMS`` random code tuples; under ``views`` each view is one level (the second view's
    share holds the last two)."""
    if code_loss == "views":
        options.setdefault("view_levels", 1)
    torch.manual_seed(seed)
    model = ItemLevelGenerator(levels, collab_dim=5, max_history_items=6, llm_config=dict(LLM_CONFIG), dropout=0.0,
                               code_loss=code_loss, n_items=n_items, **options).eval()
    model.set_items(code_catalogue(levels, N_ITEMS), torch.randn(N_ITEMS + 1, 5))
    return model


def sequence(model: ItemLevelGenerator, items: torch.Tensor) -> ItemSequence:
    """Right-padded item sequences as CEMG hands them to its generator."""
    return ItemSequence(items, (items > 0).sum(1), model.item_codes[items], model.item_collab[items])


@pytest.mark.parametrize("code_loss", ["items", "levels"])
def test_scores_are_log_probabilities_of_code_tuples(code_loss):
    model = generator(code_loss)
    codes = model.item_codes
    states = torch.randn(3, 16)
    with torch.no_grad():
        scores = model.item_log_probs(states)
        assert scores.shape == (3, N_ITEMS + 1) and (scores[:, 0] == float("-inf")).all()
        if code_loss == "items":  # a distribution over the items that exist
            torch.testing.assert_close(scores[:, 1:].exp().sum(1), torch.ones(3))
        else:  # each level its own softmax over all its codes: an item's score is the sum of its codes'
            per_level = [torch.log_softmax(head(states) @ table.weight.T, -1)
                         for head, table in zip(model.heads, model.code_embeddings)]
            expected = sum(p[:, codes[1:, level]] for level, p in enumerate(per_level))
            torch.testing.assert_close(scores[:, 1:], expected)
            every = torch.tensor(list(itertools.product(*(range(s) for s in LEVELS))))
            all_tuples = sum(p[:, every[:, level]] for level, p in enumerate(per_level))
            torch.testing.assert_close(all_tuples.exp().sum(1), torch.ones(3))  # normalised over all tuples


@pytest.mark.parametrize("code_loss", ["items", "levels", "views"])
def test_under_cpu_autocast_the_scores_are_normalised_in_float32(code_loss):
    """RecBole's ``enable_amp`` runs training under autocast, bf16 on a CPU: the item scores' products may be bf16,
    their normalisation must not be (a bf16 log-softmax over many items is off by a percent)."""
    model = generator(code_loss)
    states = torch.randn(3, 16)
    with torch.no_grad():
        exact = model.item_log_probs(states)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.item_log_probs(states)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, atol=0.05, rtol=0.0)  # bf16 products, nothing worse
    if code_loss == "items":
        torch.testing.assert_close(mixed[:, 1:].exp().sum(1), torch.ones(3), atol=1e-6, rtol=0.0)


@pytest.mark.parametrize("candidates", [False, True])
def test_views_score_an_item_by_the_sum_of_each_views_own_likelihood(candidates):
    """Two views of 2 + 3 levels (the last the de-duplication level): under ``views`` an item's score is the sum of
    the log-probabilities that two ``items`` generators over each view's levels alone (the same heads and code
    embeddings) give it, each a distribution over the (candidate) items. With the same weights it differs from the
    joint ``items`` score by a constant per state: the two rank alike and differ in what training pushes down."""
    levels = [3, 4, 3, 4, 2]
    views, joint = generator("views", levels=levels, view_levels=2), generator("items", levels=levels)
    mask = torch.rand(N_ITEMS + 1, generator=torch.Generator().manual_seed(2)) < 0.7 if candidates else None
    states = torch.randn(4, 16)
    with torch.no_grad():
        scores = views.item_log_probs(states, candidates=mask)
        experts = []
        for share in (slice(0, 2), slice(2, 5)):
            expert = generator("items", levels=levels[share])
            expert.set_items(views.item_codes[:, share], views.item_collab)
            expert.heads, expert.code_embeddings = views.heads[share], views.code_embeddings[share]
            experts.append(expert.item_log_probs(states, candidates=mask))
            allowed = experts[-1].isfinite()
            assert allowed.sum(1).tolist() == [int(mask[1:].sum()) if candidates else N_ITEMS] * 4
            torch.testing.assert_close(experts[-1].masked_fill(~allowed, -1e9).exp().sum(1), torch.ones(4))
        torch.testing.assert_close(scores, experts[0] + experts[1])
        difference = (scores - joint.item_log_probs(states, candidates=mask))[allowed].view(4, -1)
        torch.testing.assert_close(difference, difference[:, :1].expand_as(difference))
        assert (difference[:, 0] < 0).all()  # the product of two distributions puts less than 1 on the items


def test_states_are_causal_and_ignore_what_follows():
    model = generator("items")
    items = torch.randint(1, N_ITEMS + 1, (2, 6), generator=torch.Generator().manual_seed(1))
    changed = items.clone()
    changed[:, 4:] = torch.tensor([[3, 0], [0, 0]])  # different (or padding) items after position 3
    with torch.no_grad():
        before = model.states(sequence(model, items))
        after = model.states(sequence(model, changed))
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("code_loss", ["items", "levels", "views"])
def test_training_learns_the_next_item_and_ranks_it_first(code_loss):
    """Histories follow item i -> item i + 1: after training, the next item has the highest exact score. The loss
    falls to its floor: 0, or under ``views`` the log of how many items share the target's share of each view (a view
    cannot tell them apart; the sum of the views can)."""
    model = generator(code_loss, seed=1).train()
    starts = torch.arange(1, N_ITEMS - 5)
    windows = starts.unsqueeze(1) + torch.arange(6).unsqueeze(0)  # [users, 6] consecutive items
    floor = 0.0
    if code_loss == "views":
        codes, targets = model.item_codes[1:], windows[:, 1:].flatten()
        for share in (slice(0, 1), slice(1, None)):
            mates = (codes[:, None, share] == model.item_codes[None, targets, share]).all(-1).sum(0)
            floor += mates.float().log().mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        loss = model.loss(sequence(model, windows), all_positions=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item() - floor)
    assert 0 <= losses[-1] < 0.2 * losses[0]
    model.eval()
    with torch.no_grad():
        top = model.all_item_scores(sequence(model, windows[:, :-1])).argmax(1)
    assert (top == windows[:, -1]).float().mean() >= 0.9


def test_loss_of_the_last_item_and_of_every_position():
    """Right-padded windows of different lengths: the last-item loss is the mean NLL of each row's last item given
    the items before it; the all-positions loss averages that over every prefix, padding never predicted."""
    model = generator("items")
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 0, 0], [4, 8, 6, 0]])
    with torch.no_grad():
        last = model.loss(sequence(model, windows), all_positions=False)
        every = model.loss(sequence(model, windows), all_positions=True)
        prefix_nll = {}
        for row, window in enumerate(windows.tolist()):
            real = [item for item in window if item]
            for end in range(1, len(real)):
                prefix = torch.tensor([real[:end]])
                prefix_nll[row, end] = -model.all_item_scores(sequence(model, prefix))[0, real[end]]
    lasts = [prefix_nll[row, max(end for r, end in prefix_nll if r == row)] for row in range(len(windows))]
    torch.testing.assert_close(last, torch.stack(lasts).mean())
    torch.testing.assert_close(every, torch.stack(list(prefix_nll.values())).mean())



def test_residual_item_embedding_starts_as_the_pure_ranker_plus_the_collaborative_term_and_trains_per_item():
    """The hybrid: at initialisation an item's output vector is its code embeddings + the projection of its
    collaborative embedding (the free per-item part is 0); the softmax over the items trains every item's free
    vector, never the padding item's."""
    hybrid, pure = generator("items", n_items=N_ITEMS + 1), generator("items")
    hybrid.load_state_dict(pure.state_dict(), strict=False)  # same backbone, heads and code embeddings
    states = torch.randn(3, 16)
    with torch.no_grad():
        collab_term = torch.cat([head(states) for head in hybrid.heads], -1) @ hybrid.residual_projection(
            hybrid.item_collab).T
        expected = torch.log_softmax((pure.item_log_probs(states) + collab_term)[:, 1:], -1)
        torch.testing.assert_close(hybrid.item_log_probs(states)[:, 1:], expected)
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 0, 0]])
    hybrid.loss(sequence(hybrid, windows), all_positions=True).backward()
    touched = hybrid.residual_items.weight.grad.abs().sum(1) > 0
    assert set(touched.nonzero().flatten().tolist()) == set(range(1, N_ITEMS + 1))  # softmax over every item
    assert not touched[0]  # the padding item is never a candidate


def test_code_mixer_starts_as_the_additive_scorer_and_learns_what_a_sum_over_levels_cannot():
    """An item's output vector is a function of its code tuple alone (items sharing a tuple score alike), equal to the
    sum over levels at initialisation. After one history, the next item is (0, 0, 0) or (1, 1, 0) half the time
    each: a sum over levels scores a tuple by its codes independently, so it cannot put more than 1/4 on each
    (NLL >= log 4); mixing the levels reaches the log 2 of the data."""
    mixed, additive = generator("items", code_mixer=32), generator("items")
    mixed.load_state_dict(additive.state_dict(), strict=False)
    states = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(mixed.item_log_probs(states), additive.item_log_probs(states))

    codes = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]])
    windows = torch.tensor([[5, 1], [5, 4]]).repeat(4, 1)
    final = {}
    for width in (0, 32):
        torch.manual_seed(0)
        model = ItemLevelGenerator([2, 2, 2], collab_dim=5, max_history_items=6, llm_config=dict(LLM_CONFIG),
                                   dropout=0.0, code_mixer=width)
        model.set_items(codes, torch.zeros(len(codes), 5))
        optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(300):
            optimiser.zero_grad()
            loss = model.loss(sequence(model, windows), all_positions=True)
            loss.backward()
            optimiser.step()
        final[width] = loss.item()
        with torch.no_grad():
            scores = model.eval().all_item_scores(sequence(model, torch.tensor([[5]])))[0]
        # the same tuple, the same score (to float rounding: the two rows of the output matmul may be summed in
        # another order): no parameter of an item's own, which would differ by far more
        torch.testing.assert_close(scores[5], scores[6], rtol=0, atol=1e-5)
    assert final[0] > torch.log(torch.tensor(4.0)) - 0.01
    assert final[32] < torch.log(torch.tensor(2.0)) + 0.05


def group_mass(model: ItemLevelGenerator, histories: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean probability the model puts on each history's group of items (a mask ``[n, items]``) as the next one."""
    with torch.no_grad():
        probs = model.eval().all_item_scores(sequence(model, histories)).exp()
    return float((probs * groups).sum(1).mean())


def trained_on(windows: torch.Tensor, codes: torch.Tensor, seed: int, **options) -> ItemLevelGenerator:
    torch.manual_seed(seed)
    model = ItemLevelGenerator([4, 16, 16], collab_dim=5, max_history_items=6, llm_config=dict(LLM_CONFIG),
                               dropout=0.0, **options)
    model.set_items(codes, torch.randn(len(codes), 5, generator=torch.Generator().manual_seed(seed)))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        optimiser.zero_grad()
        model.loss(sequence(model, windows), all_positions=True).backward()
        optimiser.step()
    return model


@pytest.mark.parametrize("options", [{}, {"transition_scope": "tuple"}, {"transition_items": 3}])
def test_code_transition_starts_as_the_heads_alone(options):
    plain, with_transition = generator("items"), generator("items", code_transition=True, **options)
    with_transition.load_state_dict(plain.state_dict(), strict=False)
    histories = sequence(plain, torch.tensor([[3, 1, 4], [2, 0, 0], [5, 6, 0]]))
    with torch.no_grad():
        torch.testing.assert_close(with_transition.all_item_scores(histories), plain.all_item_scores(histories))


@pytest.mark.parametrize("task, seed", [("cell", 0), ("cell", 1), ("other level", 0), ("two back", 0)])
def test_code_transition_carries_what_it_reads_to_items_never_read_in_training(task, seed):
    """64 items, codes of 4 x 16 x 16. Trained with 48 of the items as the item the next one depends on, the model
    is asked after each of the other 16, and should put its mass on the next item's group:

    - cell: the next item shares its level-0 cell with the last one. The level-wise transition reads that code
      directly; the heads alone must find it in the sum of the item's three code embeddings.
    - other level: the next item's level-0 cell is the last item's level-1 code modulo 4, which the whole tuple's
      transition (``transition_scope: tuple``) maps directly and the level-wise one cannot.
    - two back: the next item is a cell-mate of the item before the last one (the last is random): the transition over
      the last 3 items (``transition_items: 3``) reads it, the one over the last item reads noise."""
    g = torch.Generator().manual_seed(seed)
    codes = code_catalogue([4, 16, 16], 64, seed)
    items = torch.arange(1, 65)
    source = codes[:, 1] % 4 if task == "other level" else codes[:, 0]
    ids = torch.arange(65)
    group = (codes[None, :, 0] == source[:, None]) & (ids[None, :] != ids[:, None]) & (ids[None, :] > 0)
    windows = []
    for a in items[:48].tolist():
        mates = items[group[a, 1:]]
        for b in mates[torch.randperm(len(mates), generator=g)[:3]].tolist():
            windows.append([a, int(torch.randint(1, 65, (1,), generator=g)), b] if task == "two back" else [a, b])
    windows = torch.tensor(windows)
    baseline, option = {"cell": ({"code_transition": False}, {"code_transition": True}),
                        "other level": ({"code_transition": True}, {"code_transition": True,
                                                                    "transition_scope": "tuple"}),
                        "two back": ({"code_transition": True}, {"code_transition": True, "transition_items": 3}),
                        }[task]
    asked = items[48:]
    histories = torch.stack([asked, torch.randint(1, 65, (16,), generator=g)], 1) if task == "two back" \
        else asked[:, None]
    mass = {}
    for name, options in (("baseline", baseline), ("option", option)):
        model = trained_on(windows, codes, seed, **options)
        mass[name] = group_mass(model, histories, group[asked])
    assert mass["option"] > 0.5 and mass["option"] > mass["baseline"] + 0.1, mass
    nn.init.zeros_(model.transition.weight)  # the mass comes through the learned maps
    assert group_mass(model, histories, group[asked]) < mass["option"] - 0.1


def codeword_clusters(codeword_dim: int, seed: int) -> ItemLevelGenerator:
    """Items 1-8, no two sharing a code at any level; the codewords put 1-3 close together and 4-6 close together,
    far from 1-3. After item 7 the targets are 1 and 2, after item 8 they are 4 and 5; 3 and 6 are never targets."""
    codes = torch.tensor([[0, 0, 0]] + [[i, i, 0] for i in range(1, 9)])
    quantizer = ResidualQuantizer(levels=2, codebook_size=9, dim=2)
    codewords = torch.zeros(2, 9, 2)
    codewords[0, 1:4, 0] = 2.0
    codewords[0, 4:7, 1] = 2.0
    codewords[1, 1:] = 0.1 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    quantizer.codebooks.data.copy_(codewords)
    torch.manual_seed(seed)
    model = ItemLevelGenerator([9, 9, 1], collab_dim=5, max_history_items=6, llm_config=dict(LLM_CONFIG),
                               dropout=0.0, codeword_dim=codeword_dim)
    model.set_items(codes, torch.zeros(len(codes), 5), decode_codes=quantizer.requires_grad_(False).decode)
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_codeword_projection_starts_as_the_plain_scorer_and_scores_code_space_neighbours_alike(seed):
    """With the projection of the codewords, the never-seen item 3 rises after item 7 (whose targets are its
    codeword neighbours) and falls after item 8; the codes' own embeddings alone tell 3 nothing of 1 and 2."""
    projected, plain = codeword_clusters(2, seed), codeword_clusters(0, seed)
    with torch.no_grad():
        states = torch.randn(3, 16)
        torch.testing.assert_close(projected.item_log_probs(states), plain.item_log_probs(states))
    windows = torch.tensor([[7, 1], [7, 2], [8, 4], [8, 5]])
    contrast = {}
    for name, model in (("projected", projected), ("plain", plain)):
        optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(200):
            optimiser.zero_grad()
            model.loss(sequence(model, windows), all_positions=True).backward()
            optimiser.step()
        with torch.no_grad():
            s = model.eval().all_item_scores(sequence(model, torch.tensor([[7], [8]])))
        contrast[name] = float((s[0, 3] - s[0, 6]) - (s[1, 3] - s[1, 6]))
    assert contrast["projected"] > 10.0
    assert abs(contrast["plain"]) < 5.0


def test_loss_candidates_leave_never_trained_items_out_of_the_training_softmax():
    """Items outside ``loss_candidates`` are no negatives: the loss is the NLL among the candidates alone, and an
    excluded item's own output vector gets no gradient (without the mask it is pushed down at every step)."""
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 0, 0]])
    candidates = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    candidates[[0, 11, 12]] = False  # padding, and two items no training window contains
    masked, plain = generator("items", n_items=N_ITEMS + 1), generator("items", n_items=N_ITEMS + 1)
    masked.loss_candidates = candidates
    for model in (masked, plain):
        model.residual_items.weight.data.normal_()  # any per-item vectors: the gradient is what is checked
    plain.load_state_dict(masked.state_dict())
    loss = masked.loss(sequence(masked, windows), all_positions=True)
    with torch.no_grad():
        states = masked.states(sequence(masked, windows).inputs())
        targets = windows[:, 1:]
        logits = (torch.cat([h(states[targets > 0]) for h in masked.heads], -1) @ masked.item_vectors().T)
        expected = -torch.log_softmax(logits[:, candidates], -1)[
            torch.arange(int((targets > 0).sum())), torch.cumsum(candidates, 0)[targets[targets > 0]] - 1].mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    plain.loss(sequence(plain, windows), all_positions=True).backward()
    assert masked.residual_items.weight.grad[[11, 12]].abs().sum() == 0
    assert (plain.residual_items.weight.grad[[11, 12]].abs().sum(1) > 0).all()


@pytest.mark.parametrize("code_loss", ["items", "views"])
def test_loss_mask_history_leaves_each_position_s_read_items_out_of_its_softmax(code_loss):
    """Each position's softmax normalises over the items its state has not read (a recurring target stays a
    candidate), on top of ``loss_candidates``; the item read gets no gradient from the position after it."""
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 5, 0]])  # row 2 reads item 5 again: that target stays
    candidates = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    candidates[[0, 12]] = False
    model = generator(code_loss, loss_mask_history=True, loss_candidates=candidates)
    loss = model.loss(sequence(model, windows), all_positions=True)
    with torch.no_grad():
        states = model.states(sequence(model, windows).inputs())
        expected = []
        for row, step in zip(*torch.nonzero(windows[:, 1:] > 0, as_tuple=True)):
            target = int(windows[row, step + 1])
            allowed = candidates.clone()
            allowed[windows[row, :step + 1]] = False
            allowed[target] = True
            query = torch.cat([head(states[row, step]) for head in model.heads], -1)
            position = torch.cumsum(allowed, 0)[target] - 1  # the target's column among the allowed items
            expected.append(-sum(torch.log_softmax((query[c] @ model.item_vectors()[:, c].T)[allowed], -1)[position]
                                 for c in model.expert_columns))  # one softmax per view under views
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    # one window, one position: item 3 is read and is not the target, so its own output vector gets no gradient
    single = generator(code_loss, n_items=N_ITEMS + 1, loss_mask_history=True)
    single.residual_items.weight.data.normal_()
    single.loss(sequence(single, torch.tensor([[3, 7]])), all_positions=True).backward()
    gradient = single.residual_items.weight.grad.abs().sum(1)
    assert gradient[3] == 0 and (gradient[[1, 2, 7]] > 0).all()
    # distillation's teacher is renormalised over the same candidates: its mass on a read item would meet a -inf
    model.distill_weight = 0.5
    distilled = model.loss(sequence(model, windows), all_positions=True, teacher=shifted_teacher(2, []))
    assert torch.isfinite(distilled) and distilled > 0.5 * loss


@pytest.mark.parametrize("levels", [0, 1])
def test_cold_target_simulation_scores_the_chosen_targets_through_their_content_only_tuples(levels):
    """With every target simulated, the loss is the NLL of each target's content-only tuple (on its first
    ``cold_target_levels`` levels, 0: all) against every other item's own tuple: the target's own column is
    replaced, nothing else changes."""
    model = generator("items", cold_target_simulation=1.0, cold_target_levels=levels)
    content = code_catalogue(LEVELS, N_ITEMS, seed=5)
    model.set_items(model.item_codes, model.item_collab, content)
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 0, 0]])
    with torch.no_grad():
        loss = model.loss(sequence(model, windows), all_positions=True)
        states = model.states(sequence(model, windows).inputs())
        targets = windows[:, 1:]
        query = torch.cat([h(states[targets > 0]) for h in model.heads], -1)
        logits = query @ model.item_vectors().T
        rows = torch.arange(len(query))
        simulated = content[targets[targets > 0]]
        if levels:
            simulated[:, levels:] = model.item_codes[targets[targets > 0], levels:]
        logits[rows, targets[targets > 0]] = (query * model.code_vectors(simulated)).sum(-1)
        logits[:, 0] = float("-inf")
        expected = -torch.log_softmax(logits, -1)[rows, targets[targets > 0]].mean()
        torch.testing.assert_close(loss, expected)
        model.cold_target_simulation = 0.0
        assert not torch.isclose(model.loss(sequence(model, windows), all_positions=True), loss)


def shifted_teacher(shift: int, calls: list | None = None):
    """A teacher sure that the item ``shift`` after the history's last one comes next; ``calls`` records what it
    was given."""
    def teacher(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append((items.clone(), lengths.clone()))
        last = items[torch.arange(len(items)), lengths - 1]
        return torch.log_softmax(8.0 * F.one_hot((last + shift).clamp(max=N_ITEMS), N_ITEMS + 1).float()
                                 .masked_fill(torch.arange(N_ITEMS + 1) == 0, float("-inf")), -1)
    return teacher


def test_distillation_mixes_the_nll_with_the_cross_entropy_to_the_teacher_of_each_prefix():
    """``(1 - w) NLL + w H(teacher, generator)`` over the same predicted positions; the teacher is asked about each
    prefix (the first ``length`` items of its row), and a generator that does not distil never asks it."""
    model = generator("items", distill_weight=0.3)
    windows = torch.tensor([[3, 7, 2, 9], [5, 1, 0, 0], [4, 8, 6, 0]])
    calls: list = []
    teacher = shifted_teacher(2, calls)
    with torch.no_grad():
        loss = model.loss(sequence(model, windows), all_positions=True, teacher=teacher)
        nll, cross_entropy, prefixes = [], [], []
        for window in windows.tolist():
            real = [item for item in window if item]
            for end in range(1, len(real)):
                prefix = torch.tensor([real[:end]])
                log_probs = model.all_item_scores(sequence(model, prefix))[0]
                soft = teacher(prefix, torch.tensor([end]))[0].exp()
                nll.append(-log_probs[real[end]])
                cross_entropy.append(-(soft[1:] * log_probs[1:]).sum())
                prefixes.append(real[:end])
    expected = 0.7 * torch.stack(nll).mean() + 0.3 * torch.stack(cross_entropy).mean()
    torch.testing.assert_close(loss, expected)
    items, lengths = calls[0]
    assert [row[:n] for row, n in zip(items.tolist(), lengths.tolist())] == prefixes
    model.distill_weight = 0.0
    calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(model.loss(sequence(model, windows), all_positions=True, teacher=teacher),
                                   torch.stack(nll).mean())
    assert not calls


def test_distillation_teaches_the_ranking_the_targets_do_not_show():
    """Targets follow item i -> i + 1 while the teacher is sure of i + 2: the generator trained on the teacher alone
    ranks i + 2 first, and the ranking is still the code tuples' log-probabilities (no teacher at scoring)."""
    model = generator("items", seed=1, distill_weight=1.0).train()
    windows = torch.arange(1, N_ITEMS - 6).unsqueeze(1) + torch.arange(6).unsqueeze(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = model.loss(sequence(model, windows), all_positions=True, teacher=shifted_teacher(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        top = model.all_item_scores(sequence(model, windows[:, :-1])).argmax(1)
    assert (top == windows[:, -1] + 1).float().mean() >= 0.9


def cold_catalogue() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warm items 1-16 (first code 0-2) and cold items 17-20 (first code 3, as their content alone places them);
    the warm items' content alone would place them at first code 3 too. Returns codes, content codes, candidates."""
    every = list(itertools.product(*(range(s) for s in LEVELS)))
    codes = torch.tensor([(0, 0, 0)] + [t for t in every if t[0] < 3][:16] + [t for t in every if t[0] == 3][:4])
    content = codes.clone()
    content[1:17, 0] = 3
    candidates = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    candidates[[0, 17, 18, 19, 20]] = False  # loss_candidates: trained
    return codes, content, candidates


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_cold_target_simulation_gives_never_trained_items_probability_without_reordering_the_trained(share):
    """Held-out items sit in a code cell no training target uses, so the trained ranker gives them no probability
    as a group; scoring 30 % of the targets through their content-only tuples gives that cell a share of the mass,
    while the order among the trained items (the next item first) stays."""
    codes, content, candidates = cold_catalogue()
    torch.manual_seed(0)
    model = ItemLevelGenerator(LEVELS, collab_dim=5, max_history_items=6, llm_config=dict(LLM_CONFIG), dropout=0.0,
                               loss_candidates=candidates, cold_target_simulation=share)
    model.set_items(codes, torch.randn(N_ITEMS + 1, 5), content)
    windows = torch.arange(1, 12).unsqueeze(1) + torch.arange(6).unsqueeze(0)  # item i -> i + 1 among warm items
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = model.loss(sequence(model, windows), all_positions=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model.all_item_scores(sequence(model, windows[:, :-1]))
    cold_mass = float(scores[:, 17:].exp().sum(1).mean())
    assert (scores[:, :17].argmax(1) == windows[:, -1]).all()
    assert cold_mass < 0.01 if share == 0 else 0.2 < cold_mass < 0.8


# ------------------------------------------------------------------------------------------ inside CEMG
@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    """One tiny run with score fusion, joint training and distillation from the collaborative model on."""
    folder = tmp_path_factory.mktemp("fusion")
    config = {"checkpoint_dir": str(folder), "score_fusion_weights": [0, 0.5, 2], "joint_weight": 0.1, "epochs": 8,
              "distill_weight": 0.5}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
        return run_cemg("CEMG", "tiny", [TINY_CONFIG], config)


def test_score_fusion_is_chosen_on_valid_and_reported_beside_the_pure_ranker(fused_run):
    fusion = fused_run["score_fusion"]
    valid = {float(w): v for w, v in fusion["valid_by_weight"].items()}
    assert set(valid) == {0.0, 0.5, 2.0}
    assert len(set(valid.values())) > 1  # the collaborative score changes the ranking: a no-op fusion fails here
    assert fusion["weight"] == max(valid, key=valid.get)
    assert fusion["best_valid_result"]["ndcg@10"] == pytest.approx(valid[fusion["weight"]])
    # weight 0 is the pure generative ranker: its valid score is the run's own best valid result
    assert valid[0.0] == pytest.approx(fused_run["best_valid_result"]["ndcg@10"])
    rows = summarise([fused_run])  # the stage-1 model CEMG trained and fused with is a row of its own too
    assert [r["model"] for r in rows] == ["CEMG", "CEMG + collab score", "SASRec (stage 1 of CEMG)"]
    assert rows[1]["test ndcg@10"] == pytest.approx(fusion["test_result"]["ndcg@10"])
    assert rows[2]["test ndcg@10"] == pytest.approx(fused_run["collaborative"]["test_result"]["ndcg@10"])
    assert fusion_row(fused_run)["test_result"] == fusion["test_result"]


def test_joint_training_reaches_the_tokenizer(fused_run, tmp_path, tiny_run_config):
    """The checkpoint's tokenizer differs from the tokenizer that fixed the codes (its saved .codes.json run)."""
    state = torch.load(fused_run["checkpoint"], weights_only=True)["state_dict"]
    staged = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"],
                      dict(tiny_run_config["config_dict"], epochs=1))
    staged_state = torch.load(staged["checkpoint"], weights_only=True)["state_dict"]
    # same seed and data: the staged run's tokenizer is the one the joint run started from
    encoder = "tokenizer.rqvae.encoder.0.weight"
    assert not torch.allclose(state[encoder], staged_state[encoder])
    assert torch.equal(state["item_codes"], staged_state["item_codes"])  # no re-coding asked for
    assert "generator.latent_projection.weight" in state


def test_runs_load_from_result_files_and_comparisons(fused_run, tmp_path, monkeypatch):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(store_user_results(fused_run, str(tmp_path / "one"), str(tmp_path)), default=str))
    assert os.path.isfile(tmp_path / "one.users.tsv.gz") and os.path.isfile(tmp_path / "one.score_fusion.users.tsv.gz")
    # a variant that spells out a whole dict names its per-user files within the file systems' 255 bytes
    spelled_out = dict(fused_run, model="CEMG[llm_config={" + "'num_attention_heads':4," * 20 + "}]")
    write_outputs([fused_run, spelled_out], summarise([fused_run, spelled_out]), str(tmp_path / "table"))
    (loaded,) = load_runs(str(single))
    assert [r["model"] for r in load_runs(str(tmp_path / "table"))] == [fused_run["model"], spelled_out["model"]]
    assert max(len(name) for name in os.listdir(tmp_path / "table.users")) < 160
    for users in (loaded["per_user"], loaded["score_fusion"]["per_user"]):
        assert len(users.ranks) == len(fused_run["per_user"].ranks)
    assert (loaded["per_user"].ranks == fused_run["per_user"].ranks).all()
    assert loaded["score_fusion"]["per_user"].users == fused_run["score_fusion"]["per_user"].users
    # rewritten with other rows, the table keeps only the per-user files its rows name (rows are renumbered)
    monkeypatch.chdir(tmp_path)  # a relative prefix, as the command line gives it
    write_outputs([spelled_out], summarise([spelled_out]), "table")
    (stored,) = json.loads((tmp_path / "table.json").read_text())["runs"]
    named = [stored["per_user"]] + [stored[k]["per_user"] for k in ("score_fusion", "collaborative") if k in stored]
    assert len(named) == 3 and named[0].startswith("table.users/00-")  # the second row is the first now
    assert sorted(os.listdir(tmp_path / "table.users")) == sorted(os.path.basename(p) for p in named)
    (rewritten,) = load_runs(str(tmp_path / "table"))
    assert (rewritten["per_user"].ranks == fused_run["per_user"].ranks).all()


@pytest.mark.parametrize("views, view_levels, collab_view, collab_shape, transition, code_loss", [
    (1, 0, False, (0, 0), False, "items"), (2, 0, False, (0, 0), False, "items"),
    (2, 1, False, (0, 0), True, "views"), (1, 2, True, (0, 0), False, "items"), (1, 2, True, (1, 40), False, "items")])
def test_codeword_projection_in_cemg_reads_the_tokenizer_it_reloads(tiny_run_config, views, view_levels, collab_view,
                                                                    collab_shape, transition, code_loss):
    """A run with the codewords in its output layer reloads through the real loading code to its recorded test
    result: the codewords come back with the tokenizer's codebooks in the checkpoint, not from anywhere else. With
    two tokenizer views every item's tuple is both views' codes (or their first ``view_levels``), and the codewords
    are both views' latents; the collaborative view's codes are its centroids' nearest to the item's unit
    collaborative embedding, level by level. With ``code_transition`` the trained maps come back too and the
    recorded ranking read the last history item's codes through them. Under ``code_loss: views`` each view's share of
    the output layer is a softmax of its own. The collaborative view may keep its own number of levels and centroids
    (``collab_view_levels``, ``collab_view_size``: here one level of 40, finer than the fused view's 16 codes)."""
    config = dict(tiny_run_config["config_dict"], codeword_projection=True, epochs=3, tokenizer_epochs=10,
                  tokenizer_views=views, view_levels=view_levels, collab_view=collab_view, code_transition=transition,
                  code_loss=code_loss, collab_view_levels=collab_shape[0], collab_view_size=collab_shape[1])
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    cold_prior = load_script("cold_prior", "benchmarks")
    model, data = cold_prior.rebuild(result, held_out=False)
    levels = view_levels or model.config["codebook_levels"]
    collab_levels, collab_size = (collab_shape[0] or levels, collab_shape[1] or 16) if collab_view else (0, 0)
    assert model.level_sizes == [16] * views * levels + [collab_size] * collab_levels + [16]
    assert model.item_codes.shape[1] == views * levels + collab_levels + 1
    assert unique_rows(model.item_codes[1:]) == model.n_items - 1
    hidden = model.generator.code_embeddings[0].embedding_dim
    expected = [(0, levels), (levels, 2 * levels + 1)] if code_loss == "views" else [(0, model.item_codes.shape[1])]
    assert [(c.start, c.stop) for c in model.generator.expert_columns] == [(a * hidden, b * hidden) for a, b in expected]
    if views + collab_view == 2:  # each view's share of the tuple is that view's own encoding of the item
        inputs = model.tokenizer_inputs().rows(torch.arange(1, model.n_items))
        second = collab_levels or levels
        own = model.tokenizer.views[1].encode(inputs)["codes"][:, :second]
        assert torch.equal(model.item_codes[1:, levels:levels + second], own)
        assert not torch.equal(model.item_codes[1:, :second], own)
    if collab_view:
        residual = F.normalize(model.collab_embeddings[1:], dim=-1)
        codebooks = model.tokenizer.views[1].quantizer.codebooks
        assert codebooks.shape[:2] == (collab_levels, collab_size)
        for level, codebook in enumerate(codebooks):
            nearest = torch.cdist(residual, codebook).argmin(1)
            assert torch.equal(model.item_codes[1:, levels + level], nearest)
            residual = residual - codebook[nearest]
        assert model.generator.codeword_projection.in_features == model.config["rqvae_latent_dim"] + residual.shape[1]
    projection = model.generator.codeword_projection.weight
    assert projection.abs().sum() > 0  # trained away from its zero start
    test = cold_prior.scored(model, data.test)
    recorded = cold_prior.with_prior(test, torch.zeros(model.n_items, dtype=torch.bool), cold_prior.constant_prior(0))
    assert recorded["all"] == pytest.approx(result["test_result"]["recall@10"], abs=1e-4)
    with torch.no_grad():  # and the codewords are part of the ranking
        projection.zero_()
        plain = cold_prior.scored(model, data.test)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(test, plain))
    assert (model.generator.transition is not None) == transition
    if transition:  # trained away from zero, and part of the ranking too
        assert model.generator.transition.weight.abs().sum() > 0
        with torch.no_grad():
            model.generator.transition.weight.zero_()
            without = cold_prior.scored(model, data.test)
        assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, without))
