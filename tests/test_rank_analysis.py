"""Ranking without the user's history: the ``mask_history`` protocol option and benchmarks/history_items.py (a
finished run re-ranked so); benchmarks/rank_profile.py (hit@k at many cutoffs, paired)."""

import numpy as np
import pytest
import torch
from conftest import load_script

from recbole_cemg.compare import merge_runs, reload_run, summarise
from recbole_cemg.errors import InputError
from recbole_cemg.evaluation import UserResults, mask_history, write_result_file
from recbole_cemg.quick_start import run_cemg


def test_a_history_masked_ranking_removes_exactly_the_history_items_above_the_target(tiny_run_config, tmp_path):
    """Reloaded through the real loading code, the run's recorded ranks come back; masking the history lowers each
    user's rank by the number of distinct history items scored above the target, and the masked top 10 holds no
    history item. The written result file merges like any other run."""
    module = load_script("history_items", "benchmarks")
    config = dict(tiny_run_config["config_dict"], epochs=2)
    run = run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    masked = module.masked_result(run)
    recorded, users = run["per_user"], masked["per_user"]
    assert users.users == recorded.users and users.items == recorded.items
    assert masked["unmasked_test_result"] == run["test_result"]
    assert masked["test_result"]["recall@10"] == pytest.approx(users.metric("recall@10").mean(), abs=1e-4)

    model, data = reload_run(run)
    above, history_top, repeat = [], [], []
    with torch.no_grad():
        for interaction, _, _, targets in data.test:
            scores = model.full_sort_predict(interaction).view(len(targets), -1)
            scores[:, 0] = float("-inf")
            target_scores = scores.gather(1, targets.view(-1, 1)).squeeze(1)
            for row, (history, target) in enumerate(zip(interaction[model.ITEM_SEQ], targets.tolist())):
                items = {int(i) for i in history if i > 0}
                above.append(sum(bool(scores[row, i] > target_scores[row]) for i in items))
                history_top.append(items)
                repeat.append(target in items)
    repeat = np.array(repeat)
    assert np.array_equal((recorded.ranks - users.ranks)[~repeat], np.array(above)[~repeat])
    assert sum(above) > 0  # the tiny SASRec, like Beauty's, ranks history items above some targets
    assert repeat.any() and (users.ranks[repeat] > 10).all()  # the tiny data repeats items: those targets are missed
    assert masked["history_items"]["targets in the history"] == pytest.approx(repeat.mean())
    assert all(not set(top.tolist()) & items for top, items in zip(users.top, history_top))
    share = masked["history_items"]
    assert 0 < share["history share of top-10 slots"] <= 1 and 0 <= share["history at rank 1"] <= 1

    write_result_file(run, str(tmp_path / "run.json"))  # the command line: a result file in, one out
    module.main([str(tmp_path / "run.json"), "--output", str(tmp_path / "masked")])
    (merged,) = merge_runs([str(tmp_path / "masked.json")])
    assert merged["model"] == "SASRec [history masked]"
    assert np.array_equal(merged["per_user"].ranks, users.ranks)
    with pytest.raises(InputError, match="ranked under two protocols: SASRec \\[history masked\\] with"):
        summarise([run, merged])

    # the protocol option ranks the same way inside the run: one epoch, so the masked validation picks the same
    # checkpoint, and the test users' ranks are the script's
    option = run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"], dict(config, epochs=1, mask_history=True),
                      verbose=False)
    again = module.masked_result(run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"], dict(config, epochs=1),
                                          verbose=False))
    assert np.array_equal(option["per_user"].ranks, again["per_user"].ranks)
    assert option["test_result"] == again["test_result"] != again["unmasked_test_result"]
    assert again["history_items"]["history share of top-10 slots"] > 0
    assert module.masked_result(option)["history_items"]["history share of top-10 slots"] == 0


def test_cemg_under_mask_history_ranks_no_history_item_in_its_top_lists(tiny_run_config):
    """CEMG and its score fusion under the option; history_items.py re-does a finished run's fusion the same way (one
    epoch of each stage that validates, so the masked validation picks the same checkpoints)."""
    config = dict(tiny_run_config["config_dict"], epochs=1, collab_epochs=1, tokenizer_epochs=10,
                  score_fusion_weights=[0, 0.5, 2])
    run = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], dict(config, mask_history=True), verbose=False)
    model, data = reload_run(run)
    histories = [{int(i) for i in row if i > 0} for interaction, *_ in data.test for row in interaction[model.ITEM_SEQ]]
    for top, items in zip(run["per_user"].top, histories):
        assert not set(top.tolist()) & items
    for top, items in zip(run["score_fusion"]["per_user"].top, histories):
        assert not set(top.tolist()) & items
    assert any(items for items in histories)

    unmasked = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    again = load_script("history_items", "benchmarks").masked_result(unmasked)
    fused, expected = again["score_fusion"], run["score_fusion"]
    assert fused["valid_by_weight"] == expected["valid_by_weight"] != unmasked["score_fusion"]["valid_by_weight"]
    assert fused["weight"] == expected["weight"] and fused["test_result"] == expected["test_result"]
    assert np.array_equal(fused["per_user"].ranks, expected["per_user"].ranks)
    assert fused["unmasked_test_result"] == unmasked["score_fusion"]["test_result"]
    assert np.array_equal(again["per_user"].ranks, run["per_user"].ranks)


def test_mask_history_needs_an_item_sequence():
    config = {"mask_history": True, "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list"}
    scores = torch.zeros(2, 5)
    mask_history(scores, {"item_id_list": torch.tensor([[1, 2], [4, 0]])}, config)
    assert torch.isinf(scores).tolist() == [[False, True, True, False, False], [True, False, False, False, True]]
    with pytest.raises(InputError, match="set mask_history: False"):
        mask_history(scores, {"user_id": torch.tensor([1, 2])}, config)


def results(ranks: list[int]) -> UserResults:
    users = [f"u{i}" for i in range(len(ranks))]
    return UserResults(users, ["i"] * len(ranks), np.array(ranks), np.ones(len(ranks), dtype=int))


def test_the_rank_profile_counts_hits_at_each_cutoff_and_pairs_them_with_the_reference():
    module = load_script("rank_profile", "benchmarks")
    reference = [results([2, 2, 30, 30, 30, 200]), results([2, 3, 30, 30, 30, 200])]
    model = [results([1, 1, 1, 400, 400, 400])]
    rows = [{"model": "B", "per_user": r} for r in reference] + [{"model": "M", "per_user": r} for r in model]
    profile = {entry["model"]: entry for entry in module.rank_profile(rows, "B", cutoffs=(1, 2, 50))}
    assert profile["B"]["seeds"] == 2 and profile["M"]["seeds"] == 1
    assert profile["B"]["hit@2"] == pytest.approx((2 / 6 + 1 / 6) / 2)
    assert profile["M"]["hit@1"] == pytest.approx(0.5) and profile["M"]["hit@50"] == pytest.approx(0.5)
    assert profile["B"]["median rank"] == pytest.approx(30)
    # the paired difference pools the reference's seeds per user: hit@50 is 1 for users 0-4 in both seeds
    assert profile["M"]["hit@50 vs ref"]["mean"] == pytest.approx(0.5 - 5 / 6)
    assert profile["M"]["hit@1 vs ref"]["mean"] == pytest.approx(0.5)
    table = module.markdown(list(profile.values()), "B", cutoffs=(1, 2, 50))
    assert "| M | 1 | 0.5000 (+0.5000" in table
    with pytest.raises(InputError, match="not a row with per-user results"):
        module.rank_profile(rows, "C")
