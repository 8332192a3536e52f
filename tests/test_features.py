"""Item feature files: atomic save, validated load, alignment to RecBole's internal item ids."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from recbole_cemg.data.features import ItemFeatures, align_item_features, load_item_features, save_item_features

TOKEN2ID = {"[PAD]": 0, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
N_ITEMS = len(TOKEN2ID)


def rows(n: int, dim: int = 3, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)


# ---------------------------------------------------------------------------------------------- save and load
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_round_trip(tmp_path, dtype):
    path = str(tmp_path / "shop.text.npz")
    tokens, features = ["i3", "i1", "item 7"], rows(3, dtype=dtype)
    save_item_features(path, tokens, features, encoder="sentence-transformers/all-MiniLM-L6-v2")
    loaded = load_item_features(path)
    assert loaded.item_tokens.tolist() == tokens
    assert loaded.features.dtype == dtype
    np.testing.assert_array_equal(loaded.features, features)
    assert loaded.encoder == "sentence-transformers/all-MiniLM-L6-v2"
    assert os.listdir(tmp_path) == ["shop.text.npz"]  # complete file, no temporary file left behind


def test_save_accepts_integer_tokens_and_overwrites(tmp_path):
    path = str(tmp_path / "f.npz")
    save_item_features(path, [10, 20], rows(2, seed=1))
    save_item_features(path, [30, 40, 50], rows(3, seed=2))
    loaded = load_item_features(path)
    assert loaded.item_tokens.tolist() == ["30", "40", "50"]  # tokens are stored as strings
    np.testing.assert_array_equal(loaded.features, rows(3, seed=2))
    assert loaded.encoder == ""
    assert os.listdir(tmp_path) == ["f.npz"]


def test_save_rejects_mismatched_rows_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "f.npz")
    with pytest.raises(ValueError, match="f.npz"):
        save_item_features(path, ["a", "b", "c"], rows(2))
    with pytest.raises(ValueError, match="f.npz"):
        save_item_features(path, ["a", "b"], np.zeros(2, dtype=np.float32))
    assert os.listdir(tmp_path) == []


def write_raw(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def expect_error(path: str, error=ValueError, match: str = "") -> None:
    with pytest.raises(error) as info:
        load_item_features(path)
    assert path in str(info.value)
    if match:
        assert match in str(info.value)


def test_missing_file(tmp_path):
    expect_error(str(tmp_path / "nope.npz"), FileNotFoundError)


def test_wrong_row_count(tmp_path):
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", "b", "c"]), features=rows(2))
    expect_error(path, match="one row per 'item_id'")


def test_features_not_a_matrix(tmp_path):
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", "b"]), features=np.zeros(2, dtype=np.float32))
    expect_error(path, match="matrix")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, bad):
    features = rows(3)
    features[1, 2] = bad
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", "b", "c"]), features=features)
    expect_error(path, match="'b'")  # names the offending item


def test_duplicate_tokens(tmp_path):
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", "b", "a"]), features=rows(3))
    expect_error(path, match="duplicate item tokens, e.g. 'a'")


def test_integer_features(tmp_path):
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", "b"]), features=np.ones((2, 3), dtype=np.int64))
    expect_error(path, match="floating point")


@pytest.mark.parametrize("item_id", [np.array([["a", "b"], ["c", "d"]]), np.array([], dtype=str),
                                     np.array([1, 2])], ids=["2-D", "empty", "ints"])
def test_item_ids_must_be_a_list_of_string_tokens(tmp_path, item_id):
    path = write_raw(tmp_path / "f.npz", item_id=item_id, features=rows(max(len(item_id), 1))[:len(item_id)])
    expect_error(path, match="'item_id' must be a non-empty 1-D array of the item tokens as strings")


def test_not_an_npz(tmp_path):
    path = tmp_path / "f.npz"
    path.write_text("item_id,features\na,0.1\n")
    expect_error(str(path), match="not a readable .npz")


def npy_file(path):
    np.save(path, rows(2))  # np.save writes to exactly this name when it ends in .npy
    return path


def empty_file(path):
    path.write_bytes(b"")
    return path


def truncated_npz(path):
    save_item_features(str(path), ["a", "b"], rows(2))
    path.write_bytes(path.read_bytes()[:150])
    return path


@pytest.mark.parametrize("make", [npy_file, empty_file, truncated_npz])
def test_other_unreadable_files_name_the_path(tmp_path, make):
    path = make(tmp_path / "f.npy" if make is npy_file else tmp_path / "f.npz")
    expect_error(str(path), match="not a readable .npz")


def test_missing_arrays(tmp_path):
    path = write_raw(tmp_path / "f.npz", ids=np.array(["a"]), features=rows(1))
    expect_error(path, match="item_id")


def test_pickled_tokens_are_refused(tmp_path):
    path = write_raw(tmp_path / "f.npz", item_id=np.array(["a", None], dtype=object), features=rows(2))
    expect_error(path)


# ------------------------------------------------------------------------------------------------------- align
def stored(tokens: list[str], seed: int = 0, encoder: str = "enc") -> ItemFeatures:
    return ItemFeatures(np.array(tokens), rows(len(tokens), seed=seed), encoder)


def test_align_places_rows_by_token_whatever_the_file_order():
    feats = stored(["d", "a", "e", "c"])
    aligned = align_item_features(feats, TOKEN2ID, N_ITEMS, "text", "f.npz")
    assert aligned.name == "text" and aligned.encoder == "enc"
    assert aligned.values.shape == (N_ITEMS, 3) and aligned.values.dtype == torch.float32
    for row, token in enumerate(["d", "a", "e", "c"]):
        assert torch.equal(aligned.values[TOKEN2ID[token]], torch.from_numpy(feats.features[row]))
    assert aligned.mask.tolist() == [False, True, False, True, True, True]
    assert torch.equal(aligned.values[TOKEN2ID["b"]], torch.zeros(3))  # missing item: masked, zeros
    assert torch.equal(aligned.values[0], torch.zeros(3))
    # same content in another order gives the same result
    permuted = ItemFeatures(feats.item_tokens[[2, 0, 3, 1]], feats.features[[2, 0, 3, 1]], "enc")
    again = align_item_features(permuted, TOKEN2ID, N_ITEMS, "text", "f.npz")
    assert torch.equal(again.values, aligned.values) and torch.equal(again.mask, aligned.mask)


def test_align_converts_float16_and_masks_padding():
    feats = ItemFeatures(np.array(["[PAD]", "b"]), rows(2, dtype=np.float16))
    aligned = align_item_features(feats, TOKEN2ID, N_ITEMS, "image", "f.npz")
    assert aligned.values.dtype == torch.float32
    assert aligned.mask.tolist() == [False, False, True, False, False, False]  # padding id 0 never counts
    torch.testing.assert_close(aligned.values[2], torch.from_numpy(feats.features[1].astype(np.float32)))


def test_align_unknown_tokens():
    feats = stored(["a", "zz", "c"])
    with pytest.raises(ValueError, match="feature_unknown_items") as info:
        align_item_features(feats, TOKEN2ID, N_ITEMS, "text", "data/f.npz")
    assert "data/f.npz" in str(info.value) and "'zz'" in str(info.value)
    aligned = align_item_features(feats, TOKEN2ID, N_ITEMS, "text", "data/f.npz", unknown_items="ignore")
    assert aligned.mask.tolist() == [False, True, False, True, False, False]
    assert torch.equal(aligned.values[3], torch.from_numpy(feats.features[2]))


@pytest.mark.parametrize("unknown_items", ["error", "ignore"])
def test_align_all_unknown_always_raises(unknown_items):
    with pytest.raises(ValueError, match="none of its 2 item tokens") as info:
        align_item_features(stored(["x", "y"]), TOKEN2ID, N_ITEMS, "text", "other.npz", unknown_items=unknown_items)
    assert "other.npz" in str(info.value)


def test_save_load_align_end_to_end(tmp_path):
    path = str(tmp_path / "tiny.text.npz")
    tokens = ["e", "b", "a"]
    save_item_features(path, tokens, rows(3, dim=4, seed=3, dtype=np.float16), encoder="clip")
    aligned = align_item_features(load_item_features(path), TOKEN2ID, N_ITEMS, "text", path)
    expected = torch.from_numpy(rows(3, dim=4, seed=3, dtype=np.float16).astype(np.float32))
    assert torch.equal(aligned.values[[5, 2, 1]], expected)
    assert aligned.mask.tolist() == [False, True, True, False, False, True]
    assert aligned.encoder == "clip"


def test_mixed_encoders_are_warned_about(tmp_path, caplog):
    from types import SimpleNamespace

    from recbole_cemg.data.features import load_modalities

    save_item_features(str(tmp_path / "toy.text.npz"), ["a", "b"], rows(2), encoder="hf:minilm")
    save_item_features(str(tmp_path / "toy.image.npz"), ["a"], rows(1), encoder="open_clip:ViT-B-32")
    config = {"feature_files": {}, "feature_path": str(tmp_path), "data_path": str(tmp_path), "dataset": "toy",
              "feature_unknown_items": "error", "collab_in_fusion": True}
    dataset = SimpleNamespace(iid_field="item_id", field2token_id={"item_id": {"[PAD]": 0, "a": 1, "b": 2}},
                              field2id_token={"item_id": ["[PAD]", "a", "b"]}, item_num=3)
    with caplog.at_level("INFO"):
        text, image = load_modalities(config, dataset, ["text", "image"])
    assert text.mask.tolist() == [False, True, True] and image.mask.tolist() == [False, True, False]
    assert any("different models" in r.message and r.levelname == "WARNING" for r in caplog.records)
    assert any(r.message.startswith("modality 'image': 1 item(s) (e.g. 'b') have no feature") for r in caplog.records)
