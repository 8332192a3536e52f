"""End-to-end behaviour of CEMG (and a RecBole baseline) on the tiny data set.

One CEMG run and one SASRec run (module-scoped, ~1 minute on a 2-core CPU) go through ``run_cemg`` exactly as a user
would; the objects that run built (config, datasets, trainer, model) are recorded on the way, so the model-level tests
below look at the very model whose metrics ``run_cemg`` reported, without training again.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import sys

import numpy as np
import pytest
import torch
from packaging.version import Version
from recbole.data.interaction import Interaction

from recbole_cemg import quick_start
from recbole_cemg.model.decoding import constrained_beam_search
from recbole_cemg.model.generator import FALLBACK_SCORE
from recbole_cemg.resume import state_path
from recbole_cemg.utils import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "tests", "data", "tiny.yaml")
TINY_DIR = os.path.join(ROOT, "tests", "data", "tiny")
N_ITEMS, N_USERS = 60, 120
METRICS = {f"{m}@{k}" for m in ("recall", "ndcg", "hit") for k in (5, 10)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------- fixtures
def _recorded_run(model: str, checkpoint_dir: str, **overrides) -> dict:
    """``run_cemg(model, "tiny")``, keeping the config, dataset, data loaders and trainer it built."""
    recorded: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
        data_preparation, get_trainer = quick_start.data_preparation, quick_start.get_trainer

        def recording_data_preparation(config, dataset):
            splits = data_preparation(config, dataset)
            recorded.update(config=config, dataset=dataset, splits=splits)
            return splits

        def recording_get_trainer(model_type, model_name):
            trainer_class = get_trainer(model_type, model_name)

            def build(config, model_instance):
                recorded["trainer"] = trainer_class(config, model_instance)
                return recorded["trainer"]

            return build

        mp.setattr(quick_start, "data_preparation", recording_data_preparation)
        mp.setattr(quick_start, "get_trainer", recording_get_trainer)
        result = quick_start.run_cemg(model, "tiny", config_file_list=[TINY_CONFIG],
                                      config_dict={"checkpoint_dir": checkpoint_dir, **overrides})
    assert {"config", "dataset", "splits", "trainer"} <= set(recorded), "run_cemg no longer goes through " \
        "data_preparation/get_trainer of recbole_cemg.quick_start; update the recording in this test"
    train_data, valid_data, test_data = recorded["splits"]
    return {"result": result, "config": recorded["config"], "dataset": recorded["dataset"], "train_data": train_data,
            "valid_data": valid_data, "test_data": test_data, "trainer": recorded["trainer"],
            "model": recorded["trainer"].model}


@pytest.fixture(scope="module")
def cemg(tmp_path_factory):
    return _recorded_run("CEMG", str(tmp_path_factory.mktemp("cemg_saved")))


@pytest.fixture(scope="module")
def cemg_tokens(tmp_path_factory):
    """CEMG with the token-level generator (trie-constrained beam search)."""
    return _recorded_run("CEMG", str(tmp_path_factory.mktemp("cemg_tokens_saved")), generator_input="tokens")


@pytest.fixture(scope="module")
def cemg_joint(tmp_path_factory):
    """CEMG with joint training, the items re-coded after every epoch."""
    return _recorded_run("CEMG", str(tmp_path_factory.mktemp("cemg_joint_saved")), joint_weight=0.1,
                         joint_recode_step=1, epochs=3, stopping_step=10)


@pytest.fixture(scope="module")
def sasrec(tmp_path_factory):
    return _recorded_run("SASRec", str(tmp_path_factory.mktemp("sasrec_saved")))


def fresh_model(run: dict):
    """A new CEMG built from the run's config and training data (random weights, no codes)."""
    model = get_model("CEMG")(run["config"], run["train_data"]._dataset).to(run["config"]["device"])
    return model.eval()


def first_batch(loader) -> Interaction:
    interaction = next(iter(loader))[0]
    return interaction.to(torch.device("cpu"))


def item_id(run: dict, token: str) -> int:
    dataset = run["dataset"]
    return int(dataset.field2token_id[dataset.iid_field][token])


def raw_sequences() -> dict[str, list[str]]:
    """Each user's items in time order, read straight from the atomic file."""
    rows = collections.defaultdict(list)
    with open(os.path.join(TINY_DIR, "tiny.inter"), encoding="utf-8") as f:
        next(f)
        for line in f:
            user, item, timestamp = line.rstrip("\n").split("\t")
            rows[user].append((float(timestamp), item))
    return {user: [item for _, item in sorted(items)] for user, items in rows.items()}


def popularity_recall_at_10() -> float:
    """Recall@10 on the test targets of recommending the 10 most frequent training items to everyone."""
    sequences = raw_sequences()
    counts = collections.Counter(item for items in sequences.values() for item in items[:-2])
    top10 = {item for item, _ in counts.most_common(10)}
    return sum(items[-1] in top10 for items in sequences.values()) / len(sequences)


# ---------------------------------------------------------------------------------------------------- whole runs
def test_cemg_run_result(cemg):
    result = cemg["result"]
    assert result["model"] == "CEMG" and result["dataset"] == "tiny"
    for name in ("best_valid_result", "test_result"):
        metrics = result[name]
        assert set(metrics) == METRICS, name
        assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
        for k in (5, 10):  # leave-one-out: one positive per user, so recall == hit and ndcg <= hit
            assert metrics[f"recall@{k}"] == pytest.approx(metrics[f"hit@{k}"])
            assert metrics[f"ndcg@{k}"] <= metrics[f"hit@{k}"] + 1e-9
        assert metrics["recall@5"] <= metrics["recall@10"]
    assert result["valid_score_bigger"] is True
    assert result["best_valid_score"] == pytest.approx(result["best_valid_result"]["ndcg@10"])

    # Far better than popularity (~0.2 on this data); observed 0.975 test / 0.975 valid recall@10.
    popularity = popularity_recall_at_10()
    assert popularity < 0.4
    assert result["test_result"]["recall@10"] >= max(0.8, popularity + 0.4), result["test_result"]
    assert result["best_valid_result"]["recall@10"] >= 0.8, result["best_valid_result"]

    seconds = result["seconds"]
    assert {"data", "train", "test", "collaborative", "tokenizer", "generator"} <= set(seconds)
    assert all(seconds[s] > 0 for s in ("collaborative", "tokenizer", "generator"))
    assert seconds["collaborative"] + seconds["tokenizer"] + seconds["generator"] <= seconds["train"] + 0.5

    tokenizer = result["tokenizer"]
    assert tokenizer["items"] == N_ITEMS
    assert tokenizer["unique_after_dedup"] == N_ITEMS
    assert tokenizer["collisions"] == N_ITEMS - tokenizer["unique_before_dedup"] >= 0
    level_sizes = cemg["model"].level_sizes
    assert level_sizes == [16, 16, 16]
    assert len(tokenizer["usage"]) == len(tokenizer["used_codes"]) == len(level_sizes)
    for usage, used, size in zip(tokenizer["usage"], tokenizer["used_codes"], level_sizes):
        assert 0 < used <= size and usage == pytest.approx(used / size)
    assert tokenizer["used_codes"][-1] == tokenizer["max_items_per_tuple"]  # dedup level: ranks 0..largest group-1

    decoding = result["decoding"]
    assert decoding["beams"] == 12
    assert decoding["users"] == N_USERS == len(raw_sequences())
    assert decoding["generated_items"] == N_USERS * 12
    assert decoding["invalid_share"] == 0 and decoding["repeated_share"] == 0
    assert decoding["users_per_second"] > 0

    assert result["parameters"] == sum(p.numel() for p in cemg["model"].parameters())
    assert os.path.isfile(result["checkpoint"]) and result["checkpoint"] == cemg["trainer"].saved_model_file


def test_sasrec_run_through_recbole_fallback(sasrec):
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer

    from recbole_cemg import resume
    from recbole_cemg.distributed import DistributedEvaluation
    from recbole_cemg.evaluation import HistoryMasking, PerUserRecording
    from recbole_cemg.resume import ResumableTraining

    result = sasrec["result"]
    assert result["model"] == "SASRec" and type(sasrec["model"]) is SASRec
    # RecBole's own trainer, with the plugin's resume, distributed-evaluation, per-user and history-masking mixins,
    # nothing else
    assert type(sasrec["trainer"]).__bases__ == (ResumableTraining, DistributedEvaluation, PerUserRecording,
                                                 HistoryMasking, Trainer)
    assert os.path.isfile(resume.state_path(result["checkpoint"]))
    assert set(result["test_result"]) == METRICS
    assert result["test_result"]["recall@10"] >= 0.75, result["test_result"]  # observed 0.95
    assert "tokenizer" not in result and "decoding" not in result
    assert result["parameters"] == sum(p.numel() for p in sasrec["model"].parameters())


def test_sasrec_load_best_model_needs_and_gets_compat_patch(sasrec):
    path = sasrec["trainer"].saved_model_file
    assert os.path.isfile(path)
    if Version(torch.__version__.split("+")[0]) >= Version("2.6"):
        # RecBole's checkpoint pickles its Config: the plain torch.load that RecBole calls refuses it ...
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, map_location="cpu")
    # ... yet reloading the best model works (the compat patch), and gives the run's own test metrics.
    again = sasrec["trainer"].evaluate(sasrec["test_data"], load_best_model=True)
    assert dict(again) == pytest.approx(sasrec["result"]["test_result"])


# ---------------------------------------------------------------------------------------------------- codes
def test_every_item_has_a_unique_code_tuple(cemg):
    model = cemg["model"]
    codes = model.item_codes.cpu()
    assert codes.shape == (N_ITEMS + 1, 3) and model.n_items == N_ITEMS + 1
    assert torch.equal(codes[0], torch.zeros(3, dtype=torch.long))  # padding row
    assert len(torch.unique(codes[1:], dim=0)) == N_ITEMS
    assert (codes[1:] >= 0).all() and (codes[1:] < torch.tensor(model.level_sizes)).all()


def test_codes_file_and_plot_next_to_checkpoint(cemg, tmp_path):
    model = cemg["model"]
    stem = os.path.splitext(cemg["trainer"].saved_model_file)[0]
    path = stem + ".codes.json"
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    assert table["level_sizes"] == model.level_sizes
    assert len(table["codes"]) == N_ITEMS
    assert table["codes"]["i59"] == model.item_codes[item_id(cemg, "i59")].tolist()

    other = fresh_model(cemg)
    assert not other.item_codes.any()
    other.load_codes(path)
    assert torch.equal(other.item_codes, model.item_codes)
    assert torch.equal(other.generator.item_codes, model.item_codes)  # the generator scores with the new table

    with open(stem + ".codes.png", "rb") as f:
        assert f.read(8) == PNG_MAGIC


@pytest.mark.parametrize("corruption", ["level_sizes", "other_dataset", "extra_item", "code_out_of_range"])
def test_codes_file_that_does_not_fit_is_refused(cemg, tmp_path, corruption):
    with open(os.path.splitext(cemg["trainer"].saved_model_file)[0] + ".codes.json", encoding="utf-8") as f:
        table = json.load(f)
    if corruption == "level_sizes":
        table["level_sizes"] = [16, 16, 8]
    elif corruption == "other_dataset":
        table["codes"]["x5"] = table["codes"].pop("i5")
    elif corruption == "extra_item":
        table["codes"]["i61"] = [15, 15, 15]
    else:
        table["codes"]["i5"] = [16, 0, 0]
    path = tmp_path / f"{corruption}.codes.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    model = fresh_model(cemg)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        model.load_codes(str(path))
    assert not model.item_codes.any()  # nothing half-installed


# ---------------------------------------------------------------------------------------------------- ranking
def beams(model, interaction) -> tuple[torch.Tensor, torch.Tensor]:
    """The token-level generator's beams for a batch of test users, searched directly."""
    history, generator = model.history(interaction), model.generator
    return constrained_beam_search(generator, generator.trie, generator.code_tokens(history.codes), history.lengths,
                                   generator.num_beams)


def test_full_sort_predict_ranks_beams_first_without_ties(cemg_tokens):
    model = cemg_tokens["model"].eval()
    interaction = first_batch(cemg_tokens["test_data"])
    batch = interaction.length
    scores = model.full_sort_predict(interaction)
    assert scores.shape == (batch, N_ITEMS + 1)
    assert torch.equal(model.full_sort_predict(interaction), scores)

    items, beam_scores = beams(model, interaction)
    assert items.shape == (batch, model.generator.num_beams) and (items > 0).all()
    for row in range(batch):
        beam = items[row]
        assert len(set(beam.tolist())) == model.generator.num_beams
        assert torch.allclose(scores[row, beam], beam_scores[row])
        rest = torch.ones(N_ITEMS + 1, dtype=torch.bool)
        rest[beam] = False
        assert scores[row, beam].min() > scores[row, rest].max()
        assert len(torch.unique(scores[row, rest])) == int(rest.sum())  # no ties in the tail
        assert (scores[row, rest] <= FALLBACK_SCORE).all()


def test_cold_item_can_be_recommended(cemg_tokens):
    model = cemg_tokens["model"].eval()
    cold = item_id(cemg_tokens, "i59")
    interaction = first_batch(cemg_tokens["test_data"])
    # With a beam per item, constrained decoding reaches every item, the cold one included.
    width = model.generator.num_beams
    try:
        model.generator.num_beams = model.n_items - 1
        scores = model.full_sort_predict(interaction)
    finally:
        model.generator.num_beams = width
    assert (scores[:, 1:] > FALLBACK_SCORE / 2).all()
    assert torch.isfinite(scores[:, cold]).all()
    # And it does show up in ordinary top-12 beams of some test users.
    found = 0
    for batch in cemg_tokens["test_data"]:
        items, _ = beams(model, batch[0])
        found += int((items == cold).any(1).sum())
    assert found > 0


def test_item_level_scores_every_item_exactly(cemg):
    """The default generator: full_sort_predict is the log-probability of every item's code tuple (a distribution
    over the items), and predict gives the same number for a given item."""
    model = cemg["model"].eval()
    interaction = first_batch(cemg["test_data"])
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        assert scores.shape == (interaction.length, N_ITEMS + 1)
        torch.testing.assert_close(scores[:, 1:].exp().sum(1), torch.ones(interaction.length))
        assert len(torch.unique(scores[0, 1:])) == N_ITEMS  # no ties left to topk
        items = torch.randint(1, N_ITEMS + 1, (interaction.length,))
        probe = Interaction({model.ITEM_SEQ: interaction[model.ITEM_SEQ],
                             model.ITEM_SEQ_LEN: interaction[model.ITEM_SEQ_LEN], model.ITEM_ID: items})
        torch.testing.assert_close(model.predict(probe), scores[torch.arange(interaction.length), items])


def test_predict_scores_each_distinct_history_once(cemg, monkeypatch):
    """RecBole's sampled evaluation asks ``predict`` for many candidate rows of one user: the history is scored
    once per user, and every row gets its candidate's exact score."""
    model = cemg["model"].eval()
    interaction = first_batch(cemg["test_data"])
    candidates = 5
    items = torch.randint(1, N_ITEMS + 1, (interaction.length * candidates,))
    probe = Interaction({model.ITEM_SEQ: interaction[model.ITEM_SEQ].repeat_interleave(candidates, 0),
                         model.ITEM_SEQ_LEN: interaction[model.ITEM_SEQ_LEN].repeat_interleave(candidates),
                         model.ITEM_ID: items})
    scored_rows = []
    all_item_scores = model.generator.all_item_scores
    monkeypatch.setattr(model.generator, "all_item_scores",
                        lambda history: scored_rows.append(len(history.items)) or all_item_scores(history))
    with torch.no_grad():
        expected = model.full_sort_predict(interaction).repeat_interleave(candidates, 0)
        scored_rows.clear()
        predicted = model.predict(probe)
    distinct = len(torch.unique(torch.cat([interaction[model.ITEM_SEQ],
                                           interaction[model.ITEM_SEQ_LEN].unsqueeze(1)], 1), dim=0))
    assert scored_rows == [distinct]
    torch.testing.assert_close(predicted, expected[torch.arange(len(items)), items])


def test_all_positions_loss_is_the_mean_of_every_prefix_loss(cemg):
    """One pass over a window ``history + target`` trains every prefix: its loss equals the mean, over every
    position, of the loss of predicting that position's item from the prefix before it, computed one by one."""
    model = cemg["model"].eval()  # no dropout
    interaction = next(iter(cemg["train_data"]))[torch.arange(6)]  # training loaders yield the batch itself
    history, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        loss = model.calculate_loss(interaction)
        per_prefix = []
        for row in range(len(lengths)):
            window = history[row, :lengths[row]].tolist() + [int(interaction[model.POS_ITEM_ID][row])]
            for end in range(1, len(window)):
                prefix, _ = model.sequence(torch.tensor([window[:end]]), torch.tensor([end]))
                per_prefix.append(-model.generator.all_item_scores(prefix)[0, window[end]])
    assert len(per_prefix) > len(lengths)  # more than the last positions
    torch.testing.assert_close(loss, torch.stack(per_prefix).mean(), rtol=1e-4, atol=1e-5)


def test_the_teacher_is_the_collaborative_model_on_the_history_alone(cemg):
    """Distillation's teacher: the stage-1 model's own full_sort_predict (as log-probabilities over the real items)
    on each history, blind to whatever follows the history in its row, and without dropout while CEMG trains."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cemg["config"].final_config_dict, "distill_weight", 0.5)
        model = fresh_model(cemg).train()
    teacher = model.collab_model
    assert teacher is not None and not teacher.training
    batch = next(iter(cemg["train_data"]))  # RecBole's training rows: history -> next item
    items, lengths = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    scores = teacher.full_sort_predict(batch)
    scores[:, 0] = float("-inf")
    after_history = torch.arange(items.shape[1]) >= lengths.unsqueeze(1)
    filled = items.masked_scatter(after_history, torch.randint(1, model.n_items, (int(after_history.sum()),)))
    torch.testing.assert_close(model.teacher_log_probs(filled, lengths), torch.log_softmax(scores, -1))


def test_joint_training_recodes_to_unique_codes_that_checkpoint_and_resume_keep(cemg_joint):
    model, trainer = cemg_joint["model"], cemg_joint["trainer"]
    with open(os.path.splitext(trainer.saved_model_file)[0] + ".codes.json", encoding="utf-8") as f:
        staged = json.load(f)["codes"]
    tokens = model.item_tokens
    staged_codes = torch.tensor([[0] * len(model.level_sizes)] + [staged[t] for t in tokens[1:]])
    last = torch.load(state_path(trainer.saved_model_file), weights_only=True)["model"]["item_codes"]
    assert not torch.equal(last, staged_codes)  # re-coded during training
    assert len(torch.unique(last[1:], dim=0)) == N_ITEMS
    best = torch.load(trainer.saved_model_file, weights_only=True)["state_dict"]
    assert len(torch.unique(best["item_codes"][1:], dim=0)) == N_ITEMS
    fresh = fresh_model(cemg_joint)
    fresh.load_codes(os.path.splitext(trainer.saved_model_file)[0] + ".codes.json")
    fresh.load_checkpoint_state(best)  # the checkpoint's table wins over the codes file, and the generator's too
    assert torch.equal(fresh.item_codes, best["item_codes"])
    assert torch.equal(fresh.generator.item_codes, best["item_codes"])


def test_joint_training_generator_loss_reaches_the_encoder(cemg_joint, monkeypatch):
    """Not only the tokenizer's own loss: the generator's loss alone has a gradient on the RQ-VAE encoder; the
    padding item stays out of the tokenizer."""
    model = cemg_joint["model"].train()
    interaction = next(iter(cemg_joint["train_data"]))
    model.zero_grad()
    tokenized = []
    tokenizer_forward = model.tokenizer.forward
    monkeypatch.setattr(model.tokenizer, "forward", lambda rows: tokenized.append(len(rows.collab))
                        or tokenizer_forward(rows))
    history = interaction[model.ITEM_SEQ]
    sequence, _ = model.sequence(history, interaction[model.ITEM_SEQ_LEN])
    assert (history == 0).any() and tokenized == [len(torch.unique(history[history > 0]))]  # padding left out
    scores = model.generator.all_item_scores(sequence)
    scores[torch.arange(len(scores)), interaction[model.POS_ITEM_ID]].mean().neg().backward()
    encoder = model.tokenizer.rqvae.encoder[0].weight
    assert encoder.grad is not None and encoder.grad.abs().sum() > 0
    model.eval()


def test_predict_equals_beam_score(cemg_tokens):
    model = cemg_tokens["model"].eval()
    interaction = first_batch(cemg_tokens["test_data"])
    items, beam_scores = beams(model, interaction)
    for j in (0, model.generator.num_beams // 2, model.generator.num_beams - 1):
        probe = Interaction({model.ITEM_SEQ: interaction[model.ITEM_SEQ],
                             model.ITEM_SEQ_LEN: interaction[model.ITEM_SEQ_LEN], model.ITEM_ID: items[:, j]})
        with torch.no_grad():
            predicted = model.predict(probe)
        assert predicted.shape == (interaction.length,)
        torch.testing.assert_close(predicted, beam_scores[:, j], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_weights_only_and_reloads(cemg):
    path = cemg["trainer"].saved_model_file
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert not {k for k in checkpoint if "optimizer" in k}
    assert {"state_dict", "epoch"} <= set(checkpoint)
    state = checkpoint["state_dict"]
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {"item_codes", "collab_embeddings"} <= set(state)

    model = cemg["model"].eval()
    fresh = fresh_model(cemg)
    interaction = first_batch(cemg["valid_data"])
    assert not torch.equal(fresh.generator.heads[0].weight, model.generator.heads[0].weight)
    fresh.load_checkpoint_state(state)
    assert torch.equal(fresh.item_codes, model.item_codes)
    expected = model.full_sort_predict(interaction)
    reloaded = fresh.full_sort_predict(interaction)
    assert torch.equal(reloaded, expected)


def test_evaluate_with_best_model_is_repeatable(cemg):
    trainer, test_data = cemg["trainer"], cemg["test_data"]
    first = dict(trainer.evaluate(test_data, load_best_model=True))
    assert trainer.model.decoding_stats.users == N_USERS  # reset before each evaluation
    second = dict(trainer.evaluate(test_data, load_best_model=True))
    assert first == second
    assert first == pytest.approx(cemg["result"]["test_result"])


# ---------------------------------------------------------------------------------------------------- features
def test_text_features_aligned_by_item_token(cemg):
    model = cemg["model"]
    text = {f.name: f for f in model.content}["text"]
    with np.load(os.path.join(TINY_DIR, "tiny.text.npz"), allow_pickle=False) as data:
        tokens = data["item_id"].astype(str).tolist()
        features = data["features"]
    five = item_id(cemg, "i5")
    assert five != 5  # internal ids follow first appearance, not the token's number
    assert torch.equal(text.values[five], torch.from_numpy(features[tokens.index("i5")]).float())
    for row, token in enumerate(tokens):
        assert torch.equal(text.values[item_id(cemg, token)], torch.from_numpy(features[row]).float()), token
    assert "i60" not in tokens
    assert not text.mask[item_id(cemg, "i60")]
    assert not text.mask[0]
    assert int(text.mask.sum()) == N_ITEMS - 1


def test_cold_start_item(cemg):
    model = cemg["model"]
    sequences = raw_sequences()
    seen_in_training = {item for items in sequences.values() for item in items[:-2]}
    assert "i59" not in seen_in_training and len(seen_in_training) == N_ITEMS - 1
    dataset = cemg["dataset"]
    for token in (f"i{k}" for k in range(1, N_ITEMS + 1)):
        assert bool(model.warm_items[item_id(cemg, token)]) == (token in seen_in_training), token
    assert not model.warm_items[0]
    assert [sequences[f"u{u}"][-1] for u in (1, 2, 3)] == ["i59"] * 3
    assert dataset.item_num == N_ITEMS + 1

    collab = model.collab_embeddings.cpu()
    cold = item_id(cemg, "i59")
    assert collab[cold].abs().sum() > 0
    # Mapped from its text, it lands near its genre (items i51..i58) rather than elsewhere.
    similarity = torch.nn.functional.cosine_similarity(collab[cold].unsqueeze(0), collab, dim=1)
    same_genre = [item_id(cemg, f"i{k}") for k in range(51, 59)]
    other = [item_id(cemg, f"i{k}") for k in range(1, 51)]
    assert similarity[same_genre].mean() > similarity[other].mean() + 0.3


# ---------------------------------------------------------------------------------------------------- get_model
def test_get_model_unknown_names_the_model():
    with pytest.raises(ValueError, match="NoSuchModel"):
        get_model("NoSuchModel")


def test_get_model_falls_back_to_recbole():
    from recbole.model.sequential_recommender import GRU4Rec

    assert get_model("GRU4Rec") is GRU4Rec
    assert get_model("CEMG").__module__ == "recbole_cemg.model.cemg"
