"""The plugin's Config: YAML precedence, model blocks in dataset files, and config validation."""

import os

import pytest

from recbole_cemg.config import Config


@pytest.fixture(autouse=True)
def clean_argv(tiny_run_config):
    return tiny_run_config


def test_protocol_applies_to_every_sequential_model():
    for model in ("SASRec", "CEMG"):
        config = Config(model, "ml-100k")
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
        assert config["MAX_ITEM_LIST_LENGTH"] == 20 and config["valid_metric"] == "NDCG@10"
        assert config["topk"] == [5, 10] and config["train_neg_sample_args"]["distribution"] == "none"


def test_dataset_model_block_applies_only_to_its_model():
    sasrec, cemg = Config("SASRec", "ml-100k"), Config("CEMG", "ml-100k")
    assert cemg["epochs"] == 40 and cemg["codebook_size"] == 64  # from the CEMG block of ml-100k.yaml
    assert sasrec["epochs"] == 200 and sasrec["train_batch_size"] == 2048  # the baseline keeps its settings
    assert Config("CEMG", "ml-100k", config_dict={"epochs": 3})["epochs"] == 3  # the user still wins


def test_shipped_features_are_found_from_any_folder_and_user_paths_stay_relative(tmp_path, monkeypatch):
    from recbole_cemg.data.features import feature_file
    from recbole_cemg.shipped import SHIPPED_ROOT

    monkeypatch.chdir(tmp_path)
    shipped = feature_file(Config("CEMG", "ml-100k"), "text")
    assert shipped == os.path.join(SHIPPED_ROOT, "assets", "ml-100k", "ml-100k.text.npz") and os.path.isfile(shipped)
    (tmp_path / "mine").mkdir()
    assert feature_file(Config("CEMG", "ml-100k", config_dict={"feature_path": "mine"}), "text") == \
        os.path.join("mine", "ml-100k.text.npz")


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="NoSuchModel"):
        Config("NoSuchModel", "ml-100k")


def test_unknown_dataset_stops_before_any_work_with_what_to_do(tmp_path):
    from recbole_cemg.quick_start import run_cemg

    with pytest.raises(FileNotFoundError, match=r"Dataset 'no-such-data' not found: there is no folder .*no-such-data.*"
                                                r"Put its atomic files there \(no-such-data.inter"):
        run_cemg("SASRec", "no-such-data", config_dict={"data_path": str(tmp_path), "checkpoint_dir": str(tmp_path)})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
