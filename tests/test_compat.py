"""recbole_cemg.compat: RecBole 1.2.1 on numpy 2, pandas 3 and torch >= 2.6, with every patch scoped."""

from __future__ import annotations

import os
import pickle
import types

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_cemg  # noqa: F401  (applies the patches)
from recbole_cemg import compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny")
ITEM_COLUMNS = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "genre"]}


def config_for(tiny_run_config, dataset: str = "tiny", **overrides):
    from recbole_cemg.config import Config

    config_dict = {**tiny_run_config["config_dict"], **overrides}
    return Config(model="SASRec", dataset=dataset, config_file_list=tiny_run_config["config_file_list"],
                  config_dict=config_dict)


def build_dataset(config):
    from recbole.data import create_dataset

    return create_dataset(config)


# ------------------------------------------------------------------------------------------------------- numpy
def test_numpy_aliases_exist():
    assert np.float_ is np.float64
    assert np.complex_ is np.complex128
    assert np.unicode_ is np.str_
    assert np.float is np.float64
    assert np.complex is np.complex128
    assert np.object is np.object_
    assert np.str is np.str_
    assert np.int is np.int_
    assert np.bool is np.bool_
    for name in ("long", "unicode"):
        assert hasattr(np, name)


def test_sasrec_config_builds_on_the_tiny_dataset(tiny_run_config):
    config = config_for(tiny_run_config)
    assert config["model"] == "SASRec" and config["dataset"] == "tiny"
    assert config["checkpoint_dir"] == tiny_run_config["config_dict"]["checkpoint_dir"]
    assert config["collab_epochs"] == 8  # from tests/data/tiny.yaml
    assert config["MAX_ITEM_LIST_LENGTH"] == 20  # from the plugin's properties/overall.yaml
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["hidden_size"] == 64  # RecBole's SASRec default
    assert np.float_ is np.float64  # compatibility_settings ran without AttributeError


# ------------------------------------------------------------------------------------------------------ pandas
def tiny_items() -> dict[str, tuple[list[str], str]]:
    with open(os.path.join(TINY, "tiny.item"), encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    return {token: (title.split(), genre) for token, title, genre in (line.split("\t") for line in lines)}


def test_tiny_dataset_splits_sequences_and_has_no_nan(tiny_run_config):
    dataset = build_dataset(config_for(tiny_run_config, load_col=ITEM_COLUMNS))
    with open(os.path.join(TINY, "tiny.inter"), encoding="utf-8") as f:
        interactions = sum(1 for line in f if line.strip()) - 1
    assert dataset.inter_num == interactions == len(dataset.inter_feat)

    feat = dataset.item_feat
    assert list(feat.columns) == ["item_id", "title", "genre"]
    assert not feat.isna().any().any()
    assert dataset.field2seqlen["title"] == 3
    expected = tiny_items()
    assert len(feat) == len(expected) + 1  # + the padding item
    for row in range(1, len(feat)):
        token = dataset.id2token("item_id", int(feat["item_id"][row]))
        title_ids = feat["title"][row]
        assert isinstance(title_ids, np.ndarray) and np.issubdtype(title_ids.dtype, np.integer)
        assert dataset.id2token("title", title_ids).tolist() == expected[token][0]
        assert dataset.id2token("genre", int(feat["genre"][row])) == expected[token][1]
    assert len(feat["title"][0]) == 0  # padding item: empty sequence, not NaN


def test_empty_cells_become_empty_sequences_padding_and_means(tiny_run_config, tmp_path):
    folder = tmp_path / "blank"
    folder.mkdir()
    with open(os.path.join(TINY, "tiny.inter"), encoding="utf-8") as f:
        (folder / "blank.inter").write_text("".join(f.readlines()[:40]))
    (folder / "blank.item").write_text("item_id:token\ttitle:token_seq\tgenre:token\tprice:float\n"
                                       "i58\tred shoe\tg1\t2.0\n"
                                       "i60\t\t\t\n"
                                       "i1\tblue\tg2\t4.0\n")
    columns = {**ITEM_COLUMNS, "item": ["item_id", "title", "genre", "price"]}
    dataset = build_dataset(config_for(tiny_run_config, "blank", data_path=str(tmp_path), load_col=columns))
    feat = dataset.item_feat
    assert not feat.isna().any().any()
    row = {dataset.id2token("item_id", int(i)): r for r, i in enumerate(feat["item_id"])}
    assert dataset.id2token("title", feat["title"][row["i58"]]).tolist() == ["red", "shoe"]
    assert dataset.id2token("title", feat["title"][row["i1"]]).tolist() == ["blue"]
    assert len(feat["title"][row["i60"]]) == 0  # empty cell -> empty sequence, not the string 'nan'
    assert "nan" not in dataset.field2token_id["title"]
    assert feat["genre"][row["i60"]] == 0  # empty token -> padding token
    assert dataset.id2token("genre", int(feat["genre"][row["i58"]])) == "g1"
    assert feat["price"][row["i60"]] == pytest.approx(3.0)  # empty float -> column mean


def test_dataset_patches_are_scoped_to_dataset_building(tiny_run_config, monkeypatch):
    from recbole.data.dataset import Dataset

    agg, read_csv = pd.Series.agg, pd.read_csv
    assert not hasattr(agg, "__wrapped__") and not hasattr(read_csv, "__wrapped__")
    seen = {}
    fill_nan = Dataset._fill_nan

    def spy(self):
        seen["agg patched"] = pd.Series.agg is not agg
        seen["read_csv patched"] = pd.read_csv is not read_csv
        return fill_nan(self)

    monkeypatch.setattr(Dataset, "_fill_nan", spy)
    build_dataset(config_for(tiny_run_config, load_col=ITEM_COLUMNS))
    assert seen == {"agg patched": True, "read_csv patched": True}
    assert pd.Series.agg is agg and pd.read_csv is read_csv
    # pandas 3 semantics outside: agg(len) is the Series' length, not per element
    assert pd.Series([[1, 2], [3]]).agg(len) == 2


def test_patches_are_restored_when_dataset_building_fails(tiny_run_config):
    agg, read_csv = pd.Series.agg, pd.read_csv
    with pytest.raises(Exception):
        build_dataset(config_for(tiny_run_config, "no_such_dataset"))
    assert pd.Series.agg is agg and pd.read_csv is read_csv


def test_elementwise_first_agg():
    agg = compat._elementwise_first_agg(pd.Series.agg)
    series = pd.Series([np.array([1, 2]), np.array([3])])
    assert agg(series, len).tolist() == [2, 1]  # element-wise first
    np.testing.assert_array_equal(agg(series, np.concatenate), [1, 2, 3])  # whole Series when that fails
    assert agg(pd.Series([1, 2, 3]), "sum") == 6  # non-callables: pandas' own agg


def test_apply_is_idempotent():
    from recbole.data.dataset import Dataset
    from recbole.trainer import Trainer

    before = (Dataset._from_scratch, Trainer.evaluate, Trainer.resume_checkpoint)
    compat.apply()
    compat.apply()
    assert (Dataset._from_scratch, Trainer.evaluate, Trainer.resume_checkpoint) == before
    assert all(getattr(method, "__cemg_patched__", False) for method in before)


# ------------------------------------------------------------------------------------------------------- torch
class Stop(Exception):
    pass


class StoredConfig(dict):
    """Stands for RecBole's Config in a checkpoint: not a type that ``weights_only=True`` accepts."""


def checkpoint_file(tmp_path) -> str:
    """A RecBole-like checkpoint holding a non-tensor object (RecBole stores its Config)."""
    path = str(tmp_path / "model.pth")
    torch.save({"state_dict": {"w": torch.ones(2)}, "config": types.SimpleNamespace(model="SASRec"),
                "other_parameter": None}, path)
    return path


def test_torch_load_is_the_original_outside_recbole(tmp_path):
    assert torch.load is torch.serialization.load
    assert not hasattr(torch.load, "__wrapped__")
    with pytest.raises(pickle.UnpicklingError):  # torch's safe default stays in force for everyone else
        torch.load(checkpoint_file(tmp_path))


def test_torch_load_patch_is_active_only_inside_evaluate(tmp_path):
    from recbole.trainer import Trainer

    seen = {}

    class Model:
        def load_state_dict(self, state_dict):
            seen["state_dict"] = state_dict
            seen["torch.load patched"] = torch.load is not torch.serialization.load
            raise Stop

    trainer = types.SimpleNamespace(saved_model_file=checkpoint_file(tmp_path), device="cpu", model=Model())
    with pytest.raises(Stop):
        Trainer.evaluate(trainer, eval_data=[1], load_best_model=True)
    assert seen["torch.load patched"] is True
    assert torch.equal(seen["state_dict"]["w"], torch.ones(2))  # the full pickle was loaded
    assert torch.load is torch.serialization.load  # restored, even though evaluate raised


def test_torch_load_patch_in_resume_checkpoint(tmp_path):
    from recbole.trainer import Trainer

    path = str(tmp_path / "resume.pth")
    torch.save({"epoch": 4, "cur_step": 2, "best_valid_score": 0.5, "state_dict": {},
                "config": StoredConfig(model="SASRec")}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)

    class Model:
        def load_state_dict(self, state_dict):
            raise Stop

    trainer = types.SimpleNamespace(device="cpu", model=Model(), config={"model": "SASRec"},
                                    logger=types.SimpleNamespace(warning=lambda *a: None))
    with pytest.raises(Stop):
        Trainer.resume_checkpoint(trainer, path)
    assert trainer.start_epoch == 5 and trainer.best_valid_score == 0.5
    assert torch.load is torch.serialization.load


def test_recbole_models_leave_autograd_anomaly_detection_off():
    """RecBole's SINE module switches anomaly detection on at import; it would slow down every training run."""
    from recbole_cemg.utils import get_model

    get_model("SINE")
    get_model("SASRec")
    assert not torch.is_anomaly_enabled()


def test_ensure_dir_tolerates_a_folder_made_meanwhile(tmp_path, monkeypatch):
    """Two processes of one run create the same checkpoint folder; RecBole's check-then-create raced."""
    import os

    from recbole.trainer import trainer as trainer_module

    (tmp_path / "saved").mkdir()  # made by the other process after this one checked that it was missing
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    trainer_module.ensure_dir(str(tmp_path / "saved"))
    assert (tmp_path / "saved").is_dir()
