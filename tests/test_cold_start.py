"""Cold-start split: items held out of training, and the test users whose target is one of them."""

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_cemg.config import Config
from recbole_cemg.data.cold_start import choose_cold_items, cold_target_loader, remove_from_training
from recbole_cemg.compare import compare_models, markdown_table, summarise


def test_choose_cold_items_is_seeded_and_skips_padding():
    cold = choose_cold_items(61, 0.1, seed=3)
    assert int(cold.sum()) == 6 and not cold[0]
    assert torch.equal(cold, choose_cold_items(61, 0.1, seed=3))
    with pytest.raises(ValueError, match="cold_item_ratio"):
        choose_cold_items(61, 1.5, seed=3)


def test_cold_items_leave_training_entirely(tiny_run_config):
    config = Config("SASRec", "tiny", tiny_run_config["config_file_list"], tiny_run_config["config_dict"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    inter = train_data._dataset.inter_feat
    before = {(int(u), tuple(h[:n].tolist()), int(t))
              for u, h, n, t in zip(inter["user_id"], inter["item_id_list"], inter["item_length"], inter["item_id"])}
    cold = choose_cold_items(train_data._dataset.item_num, 0.15, seed=1)
    fields = {name: values.clone() for name, values in inter.interaction.items()}
    reduced = remove_from_training(config, train_data, cold)._dataset.inter_feat
    assert all(torch.equal(inter[name], values) for name, values in fields.items())  # training data left as it was
    assert len(reduced) > 0
    assert not cold[reduced["item_id"]].any() and not cold[reduced["item_id_list"]].any()
    for user, history, length, target in zip(reduced["user_id"], reduced["item_id_list"], reduced["item_length"],
                                             reduced["item_id"]):
        assert length > 0 and (history[length:] == 0).all()
        # each history is an original history with the cold items cut out, order kept
        assert any(u == int(user) and t == int(target)
                   and [i for i in h if not cold[i]] == history[:length].tolist() for u, h, t in
                   ((u, h, t) for u, h, t in before if u == int(user) and t == int(target)))
    loader = cold_target_loader(config, test_data, cold)
    targets = loader._dataset.inter_feat["item_id"]
    assert len(targets) > 0 and cold[targets].all()
    assert len(targets) == int(cold[test_data._dataset.inter_feat["item_id"]].sum())


def test_content_codes_reach_cold_items_where_id_embeddings_cannot(tiny_run_config):
    config_dict = dict(tiny_run_config["config_dict"], cold_item_ratio=0.15)
    rows = compare_models(["CEMG", "SASRec"], "tiny", tiny_run_config["config_file_list"], config_dict)
    results = {row["model"]: row for row in rows}
    for result in results.values():
        assert result["cold_start"]["cold_items"] == 9 and result["cold_start"]["test_users"] > 5
    cemg = results["CEMG"]["cold_start"]["test_result"]["recall@10"]
    sasrec = results["SASRec"]["cold_start"]["test_result"]["recall@10"]
    assert sasrec <= 0.05  # never a training target: its ID embedding is pushed below every trained item
    assert cemg > sasrec + 0.1
    summary = summarise(rows)  # the comparison table gets the cold-start columns
    assert {e["model"]: e["cold recall@10"] for e in summary} == {"CEMG": cemg, "SASRec": sasrec}
    assert "| cold recall@10 | cold ndcg@10 |" in markdown_table(summary).splitlines()[0]
