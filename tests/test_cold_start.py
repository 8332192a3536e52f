"""Cold-start split: items held out of training, and the test users whose target is one of them."""

import json
import os

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_cemg.config import Config
from recbole_cemg.quick_start import prepare_data
from recbole_cemg.data.cold_start import choose_cold_items, remove_from_training
from recbole_cemg.compare import compare_models, markdown_table, summarise


def test_choose_cold_items_is_seeded_and_skips_padding():
    cold = choose_cold_items(61, 0.1, seed=3)
    assert int(cold.sum()) == 6 and not cold[0]
    assert torch.equal(cold, choose_cold_items(61, 0.1, seed=3))
    with pytest.raises(ValueError, match="cold_item_ratio"):
        choose_cold_items(61, 1.5, seed=3)


def test_cold_items_leave_training_entirely(tiny_run_config):
    config = Config("SASRec", "tiny", tiny_run_config["config_file_list"], tiny_run_config["config_dict"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
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


def test_content_codes_reach_cold_items_where_id_embeddings_cannot(tiny_run_config):
    # cold_simulation and cold_target_simulation: CEMG's settings for catalogues with new items (SASRec and the
    # content floor ignore them)
    config_dict = dict(tiny_run_config["config_dict"], cold_item_ratio=0.15, score_fusion_weights=[0, 1],
                       cold_simulation=0.5, cold_target_simulation=0.3)
    rows = compare_models(["CEMG", "SASRec", "ContentSimilarity"], "tiny", tiny_run_config["config_file_list"],
                          config_dict)
    results = {row["model"]: row for row in rows}
    identity = {(r["cold_start"]["cold_items"], r["cold_start"]["cold_items_sha256"]) for r in results.values()}
    assert len(identity) == 1 and identity.pop()[0] == 9  # the same held-out items for every model of the seed
    for result in results.values():
        cold = result["cold_start"]
        users = result["per_user"]
        assert cold["test_users"] > 5 and cold["test_users"] + cold["warm_users"] == len(users.users)
        assert cold["test_users"] <= int((users.train_counts == 0).sum())  # a held-out item has no training row
    cemg = results["CEMG"]["cold_start"]["test_result"]["recall@10"]
    sasrec = results["SASRec"]["cold_start"]["test_result"]["recall@10"]
    content = results["ContentSimilarity"]["cold_start"]["test_result"]["recall@10"]
    assert sasrec <= 0.05  # never a training target: its ID embedding is pushed below every trained item
    assert cemg > sasrec + 0.1 and content > sasrec + 0.1  # content reaches them
    assert results["SASRec"]["cold_start"]["cold_share@10"] < 0.02 < results["CEMG"]["cold_start"]["cold_share@10"]
    # the fused row and CEMG's stage-1 model carry their own cold-start numbers
    cold = prepare_data(Config("CEMG", "tiny", tiny_run_config["config_file_list"], config_dict)).cold
    for entry in (results["CEMG"], results["CEMG"]["collaborative"], results["CEMG"]["score_fusion"]):
        # each row's cold-user numbers are its per-user metrics over exactly the users with a held-out target
        users, summary = entry["per_user"], entry["cold_start"]
        held_out = cold.numpy()[users.targets]
        assert (users.held_out == held_out).all()  # recorded per user, written with the per-user results
        assert summary["test_users"] == int(held_out.sum())
        assert summary["test_result"]["recall@10"] == pytest.approx(users.metric("recall@10")[held_out].mean(),
                                                                    abs=1e-4)
        assert summary["warm_result"]["ndcg@10"] == pytest.approx(users.metric("ndcg@10")[~held_out].mean(), abs=1e-4)
        assert summary["cold_share@10"] == pytest.approx(cold.numpy()[users.top[:, :10]].mean())
    # the generator's content-only tuples: a held-out item's is its own tuple (its collaborative embedding already
    # comes from its content alone), most warm items' differ from theirs
    with open(os.path.splitext(results["CEMG"]["checkpoint"])[0] + ".codes.json", encoding="utf-8") as f:
        table = json.load(f)
    codes, content = (torch.tensor(list(table[key].values())) for key in ("codes", "content_codes"))
    same = (codes == content).all(1)
    assert same[cold[1:]].all() and (~same[~cold[1:]]).float().mean() > 0.3
    summary = summarise(rows)  # the comparison table gets the cold-start columns
    by_model = {e["model"]: e for e in summary}
    assert by_model["CEMG"]["cold recall@10"] == cemg and by_model["SASRec"]["cold recall@10"] == sasrec
    assert by_model["SASRec (stage 1 of CEMG)"]["cold users"] == by_model["CEMG"]["cold users"]
    header = markdown_table(summary).splitlines()[0]
    assert "| cold users | cold recall@10 | cold ndcg@10 | warm recall@10 | warm ndcg@10 | cold share@10 |" in header


@pytest.mark.parametrize("exclude_history", [False, True])
def test_content_similarity_scores_the_history_profile(exclude_history):
    """The content-only reference: cosine similarity to the normalised sum of the history's unit vectors; with
    ``exclude_history`` the history's items (and the padding item) rank last."""

    from recbole_cemg.model.content_similarity import ContentSimilarity

    model = ContentSimilarity.__new__(ContentSimilarity)
    torch.nn.Module.__init__(model)
    unit = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # item 0: padding
    model.register_buffer("unit_text", unit)
    model.modality_names, model.n_items, model.ITEM_SEQ = ["text"], 4, "item_id_list"
    model.exclude_history = exclude_history
    scores = model.full_sort_predict({"item_id_list": torch.tensor([[1, 2, 0], [3, 0, 0]])})
    profile = torch.tensor([1.0, 1.0]) / 2 ** 0.5
    expected = torch.stack([unit @ profile, unit @ unit[3]])
    if exclude_history:
        expected[0, [0, 1, 2]] = expected[1, [0, 3]] = float("-inf")
    assert torch.equal(scores.isinf(), expected.isinf())
    assert torch.allclose(scores[~scores.isinf()], expected[~expected.isinf()])
    assert scores[0].argmax() == 3  # the item between the two seen ones
    assert scores[1].argmax() == (2 if exclude_history else 3)  # with repeats allowed, the history's own item wins
