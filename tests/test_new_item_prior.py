"""The new-item prior: the generator's distribution as a mixture of the items training saw and the new ones, each
part in the generator's own order, the new ones given a fixed share chosen on the validation split."""

import pytest
import torch

from recbole_cemg.compare import summarise
from recbole_cemg.new_item_prior import mixture_log_probs
from recbole_cemg.quick_start import run_cemg


def test_every_user_gets_the_share_for_the_new_items_and_each_part_keeps_its_order():
    torch.manual_seed(0)
    new = torch.zeros(30, dtype=torch.bool)
    new[19:] = True  # 11 new items, 18 seen ones (padding aside)
    scores = torch.log_softmax(torch.randn(6, 30) * 3, dim=1)
    scores[:, 0] = float("-inf")  # padding
    scores[0, 3] = scores[1, 25] = float("-inf")  # items a model never ranks stay out
    mixed = mixture_log_probs(scores, new, 0.3)
    torch.testing.assert_close(mixed.exp()[:, new].sum(1), torch.full((6,), 0.3))
    torch.testing.assert_close(mixed.exp()[:, ~new].sum(1), torch.full((6,), 0.7))
    for part in (new, ~new):  # within each part, the model's own order and ratios
        torch.testing.assert_close(mixed[:, part].exp() / mixed[:, part].exp().sum(1, keepdim=True),
                                   scores[:, part].exp() / scores[:, part].exp().sum(1, keepdim=True))
    assert mixed[0, 3] == float("-inf") and mixed[1, 25] == float("-inf") and (mixed[:, 0] == float("-inf")).all()
    assert mixture_log_probs(scores, new, 0.0) is scores  # share 0: the model alone
    top = mixture_log_probs(scores, new, 1 - 1e-9).topk(5, dim=1).indices
    assert new[top].all()  # a large share puts the new items first


def test_a_cold_start_run_chooses_the_share_on_validation_and_reports_it_as_a_row(tiny_run_config):
    config = dict(tiny_run_config["config_dict"], cold_item_ratio=0.15, epochs=2, tokenizer_epochs=10,
                  loss_candidates="trained", new_item_shares=[0, 0.1, 0.5])
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    prior = result["new_item_prior"]
    metric = "ndcg@10"
    assert set(prior["valid_by_weight"]) == {"0.0", "0.1", "0.5"}
    assert prior["valid_by_weight"][str(prior["weight"])] == max(prior["valid_by_weight"].values())
    assert prior["valid_by_weight"]["0.0"] == pytest.approx(result["best_valid_result"][metric], abs=1e-4)  # pure
    assert prior["cold_start"]["cold_items"] == result["cold_start"]["cold_items"]
    if prior["weight"] == 0:
        assert prior["test_result"] == pytest.approx(result["test_result"], abs=1e-4)
    rows = {r["model"]: r for r in summarise([result])}
    assert rows["CEMG + new-item prior"]["test ndcg@10"] == pytest.approx(prior["test_result"][metric])
    assert rows["CEMG + new-item prior"]["cold share@10"] == prior["cold_start"]["cold_share@10"]
    # a large share puts held-out items in the lists: the prior, not the training, moves them
    forced = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], dict(config, new_item_shares=[0.5]),
                      verbose=False)
    assert forced["new_item_prior"]["weight"] == 0.5
    assert forced["new_item_prior"]["cold_start"]["cold_share@10"] > forced["cold_start"]["cold_share@10"]

