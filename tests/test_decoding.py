"""The code trie, trie-constrained beam search (checked against exhaustive teacher-forced scoring) and the generator's
input layout and losses, on a tiny randomly initialised Llama."""

from __future__ import annotations


import pytest
import torch

from recbole_cemg.model.decoding import CodeTrie, constrained_beam_search
from recbole_cemg.model.generator import BOS, PAD, CodeGenerator
from tests.conftest import code_catalogue

LEVELS = [4, 4, 3]
N_ITEMS = 25
MAX_HISTORY = 4
LLM_CONFIG = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    model = CodeGenerator(LEVELS, MAX_HISTORY, llm_config=dict(LLM_CONFIG))
    with torch.no_grad():  # a random init of this size is nearly uniform; sharpen it so that rankings are clear
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    return model.eval()


@pytest.fixture(scope="module")
def codes():
    return code_catalogue(LEVELS, N_ITEMS)


@pytest.fixture(scope="module")
def trie(codes):
    return CodeTrie(codes, torch.arange(1, N_ITEMS + 1), LEVELS)


def histories(generator, codes, lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded history tokens ``[users, MAX_HISTORY, levels]``; padding slots hold garbage item codes."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (len(lengths), MAX_HISTORY), generator=g)
    return generator.code_tokens(codes[items]), torch.tensor(lengths)


def exhaustive(generator, codes, history: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every catalogue item scored by teacher forcing, best first."""
    items = torch.arange(1, N_ITEMS + 1)
    target = generator.code_tokens(codes[items])
    with torch.no_grad():
        scores = generator.target_log_probs(history.unsqueeze(0).expand(N_ITEMS, -1, -1),
                                            torch.full((N_ITEMS,), length), target).sum(-1)
    order = torch.argsort(scores, descending=True)
    return items[order], scores[order]


# ------------------------------------------------------------------------------------------------------- trie
def test_trie_maps_every_tuple_to_its_item(codes, trie):
    for item in range(1, N_ITEMS + 1):
        node = 0
        for level in range(len(LEVELS)):
            node = int(trie.child_table(level)[node, codes[item, level]])
            assert node >= 0
        assert int(trie.leaf_items[node]) == item
    # prefixes of no item lead nowhere
    used_first = set(codes[1:, 0].tolist())
    for code in range(LEVELS[0]):
        assert (int(trie.child_table(0)[0, code]) >= 0) == (code in used_first)


def test_trie_rejects_duplicate_tuples(codes):
    duplicated = codes.clone()
    duplicated[7] = duplicated[3]
    with pytest.raises(ValueError, match="share a code tuple"):
        CodeTrie(duplicated, torch.arange(1, N_ITEMS + 1), LEVELS)


# ------------------------------------------------------------------------------------------------ beam search
@pytest.mark.parametrize("beams", [16, N_ITEMS])
def test_beam_search_equals_exhaustive_search(generator, codes, trie, beams):
    """With at least as many beams as there are prefixes at every level, beam search is exact: it must return the
    same ranking and scores as scoring every item by teacher forcing."""
    lengths = [1, 2, 3, MAX_HISTORY, 1, MAX_HISTORY]
    history, lengths_t = histories(generator, codes, lengths)
    items, scores = constrained_beam_search(generator, trie, history, lengths_t, beams)
    assert items.shape == (len(lengths), beams) and scores.shape == (len(lengths), beams)
    for user, length in enumerate(lengths):
        expected_items, expected_scores = exhaustive(generator, codes, history[user], length)
        assert items[user, :5].tolist() == expected_items[:5].tolist(), f"user {user} (history {length})"
        torch.testing.assert_close(scores[user, :5], expected_scores[:5], atol=1e-4, rtol=0)
        # in fact the whole returned list is exact
        assert items[user].tolist() == expected_items[:beams].tolist()
        torch.testing.assert_close(scores[user], expected_scores[:beams], atol=1e-4, rtol=0)
    # the rankings differ between users, so the comparison is not trivially satisfied
    assert len({tuple(row[:5].tolist()) for row in items}) > 1


def test_beam_search_results_are_valid_items_without_repeats(generator, codes, trie):
    history, lengths = histories(generator, codes, [2, 4, 1], seed=3)
    items, scores = constrained_beam_search(generator, trie, history, lengths, 8)
    assert ((items >= 1) & (items <= N_ITEMS)).all()
    for row in items.tolist():
        assert len(set(row)) == len(row)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    assert (scores < 0).all()
    # the score of each returned item is its teacher-forced log-probability
    for user in range(3):
        target = generator.code_tokens(codes[items[user]])
        with torch.no_grad():
            forced = generator.target_log_probs(history[user:user + 1].expand(8, -1, -1),
                                                lengths[user:user + 1].expand(8), target).sum(-1)
        torch.testing.assert_close(scores[user], forced, atol=1e-4, rtol=0)


def test_beam_search_does_not_depend_on_padding_contents_or_batch(generator, codes, trie):
    history, lengths = histories(generator, codes, [2, 3], seed=4)
    items, scores = constrained_beam_search(generator, trie, history, lengths, 6)
    scrambled = history.clone()
    scrambled[0, 2:] = generator.code_tokens(codes[torch.tensor([5, 9])])  # change only padding slots
    again_items, again_scores = constrained_beam_search(generator, trie, scrambled, lengths, 6)
    assert torch.equal(items, again_items)
    torch.testing.assert_close(scores, again_scores, atol=1e-5, rtol=0)
    alone_items, alone_scores = constrained_beam_search(generator, trie, history[1:], lengths[1:], 6)
    assert torch.equal(alone_items[0], items[1])
    torch.testing.assert_close(alone_scores[0], scores[1], atol=1e-5, rtol=0)


def test_more_beams_than_items(generator, codes, trie):
    beams = N_ITEMS + 5
    history, lengths = histories(generator, codes, [3, 1], seed=2)
    items, scores = constrained_beam_search(generator, trie, history, lengths, beams)
    assert items.shape == (2, beams)
    assert (items[:, N_ITEMS:] == -1).all()
    assert torch.isneginf(scores[:, N_ITEMS:]).all()
    assert torch.isfinite(scores[:, :N_ITEMS]).all()
    for user in range(2):
        assert sorted(items[user, :N_ITEMS].tolist()) == list(range(1, N_ITEMS + 1))  # the whole catalogue


def test_beam_search_is_deterministic(generator, codes, trie):
    history, lengths = histories(generator, codes, [4, 2, 1], seed=7)
    first = constrained_beam_search(generator, trie, history, lengths, 10)
    second = constrained_beam_search(generator, trie, history, lengths, 10)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# ---------------------------------------------------------------------------------------------- generator inputs
def test_history_inputs_left_pads_the_history(generator):
    offsets = generator.level_offsets
    assert offsets.tolist() == [2, 6, 10]  # PAD, BOS, then the code tokens level by level
    real = lambda *codes: (torch.tensor(codes) + offsets).tolist()  # noqa: E731
    history = torch.tensor([
        [real(0, 1, 2), real(3, 3, 0), real(1, 1, 1)],  # length 2: the last slot is padding
        [real(2, 0, 1), real(0, 0, 0), real(1, 2, 2)],  # length 3: no padding
        [real(3, 2, 1), real(2, 2, 2), real(0, 3, 0)],  # length 1
    ])
    ids, mask = generator.history_inputs(history, torch.tensor([2, 3, 1]))
    assert ids.shape == (3, 1 + 3 * 3) and mask.shape == ids.shape
    assert ids[0].tolist() == [BOS, PAD, PAD, PAD] + real(0, 1, 2) + real(3, 3, 0)
    assert ids[1].tolist() == [BOS] + real(2, 0, 1) + real(0, 0, 0) + real(1, 2, 2)
    assert ids[2].tolist() == [BOS] + [PAD] * 6 + real(3, 2, 1)
    assert mask.tolist() == [[1, 0, 0, 0, 1, 1, 1, 1, 1, 1],
                             [1] * 10,
                             [1, 0, 0, 0, 0, 0, 0, 1, 1, 1]]
    assert (ids[mask == 0] == PAD).all()


# ----------------------------------------------------------------------------------------------------- losses
def window(codes, items: list[list[int]], generator) -> torch.Tensor:
    return generator.code_tokens(codes[torch.tensor(items)])


def test_sequence_loss_on_two_items_equals_the_next_item_loss(generator, codes):
    tokens = window(codes, [[4, 11], [20, 2], [7, 7]], generator)
    lengths = torch.tensor([2, 2, 2])
    with torch.no_grad():
        sequence = generator.sequence_loss(tokens, lengths)
        single = generator.target_loss(tokens[:, :1], torch.ones(3, dtype=torch.long), tokens[:, 1])
    assert sequence.item() == pytest.approx(single.item(), abs=1e-5)
    assert sequence.item() > 0


def test_sequence_loss_averages_every_next_item_prediction(generator, codes):
    """Windows of different lengths in one batch (right-padded): the loss is the mean over all predicted code
    tokens of the per-target cross-entropies, each target given the items before it."""
    rows = [[3, 8, 15, 21], [9, 1, 0, 0], [12, 5, 25, 0]]
    lengths = torch.tensor([4, 2, 3])
    tokens = window(codes, rows, generator)
    with torch.no_grad():
        sequence = generator.sequence_loss(tokens, lengths)
        total, count = 0.0, 0
        for row, length in enumerate(lengths.tolist()):
            for t in range(1, length):
                per_target = generator.target_loss(tokens[row:row + 1, :t], torch.tensor([t]), tokens[row:row + 1, t])
                total += per_target.item() * len(LEVELS)
                count += len(LEVELS)
    assert sequence.item() == pytest.approx(total / count, abs=1e-5)


def test_loss_is_mean_negative_target_log_prob(generator, codes):
    history, lengths = histories(generator, codes, [1, 3, 4], seed=5)
    target = generator.code_tokens(codes[torch.tensor([6, 13, 24])])
    with torch.no_grad():
        loss = generator.target_loss(history, lengths, target)
        log_probs = generator.target_log_probs(history, lengths, target)
    assert log_probs.shape == (3, len(LEVELS))
    assert loss.item() == pytest.approx(-log_probs.mean().item(), abs=1e-5)
