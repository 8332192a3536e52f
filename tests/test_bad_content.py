"""Content that went wrong upstream reaches a CEMG run as a masked modality, named in the log, and the run goes through.

Item i3's image file is corrupt and its text empty, i7 has no image, i5 an empty text (and i60 has no text in the
tiny data set's own text features). The image features come from
the real ``encode_images.py`` (which skips the corrupt file), the text features leave out the empty texts (as
``encode_text.py`` does). An item with no content at all is coded from its collaborative embedding, and named in a
warning that says what it gets when that embedding is not fused.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from recbole_cemg.data.features import load_item_features, save_item_features
from recbole_cemg.quick_start import run_cemg
from tests.conftest import ROOT, load_script
from tests.test_images import image_bytes

CORRUPT_IMAGE, NO_IMAGE, EMPTY_TEXT, NO_TEXT = "i3", "i7", ["i3", "i5"], ["i3", "i5", "i60"]


@pytest.fixture
def feature_dir(tmp_path, tiny_clip):
    _, checkpoint = tiny_clip
    text = load_item_features(os.path.join(ROOT, "tests", "data", "tiny", "tiny.text.npz"))
    keep = ~np.isin(text.item_tokens, EMPTY_TEXT)
    save_item_features(str(tmp_path / "tiny.text.npz"), text.item_tokens[keep], text.features[keep], text.encoder)

    images = tmp_path / "images"
    images.mkdir()
    for i, token in enumerate(text.item_tokens.tolist() + ["i60"]):
        if token != NO_IMAGE:
            (images / f"{token}.png").write_bytes(image_bytes((4 * i, 255 - 4 * i, 128), "PNG"))
    (images / f"{CORRUPT_IMAGE}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = load_script("encode_images").main(
        ["--image_dir", str(images), "--model", "tiny-clip", "--pretrained", str(checkpoint), "--device", "cpu",
         "--output", str(tmp_path / "tiny.image.npz")])
    assert report["unreadable"] == [CORRUPT_IMAGE]
    return tmp_path


def test_masked_items_are_named_and_the_run_goes_through(tiny_run_config, feature_dir, caplog):
    settings = dict(tiny_run_config["config_dict"], modalities=["text", "image"], feature_path=str(feature_dir),
                    epochs=2, collab_epochs=2, tokenizer_epochs=20)
    with caplog.at_level(logging.WARNING):
        result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    image_line = next(w for w in warnings if w.startswith("modality 'image'"))
    text_line = next(w for w in warnings if w.startswith("modality 'text'"))
    assert image_line.startswith("modality 'image': 2 item(s)") and "'i3'" in image_line and "'i7'" in image_line
    assert text_line.startswith("modality 'text': 3 item(s)") and all(f"'{t}'" in text_line for t in NO_TEXT)
    assert any(w.startswith("1 item(s) (e.g. 'i3') have no feature in any of ['text', 'image']") for w in warnings)
    assert result["tokenizer"]["unique_after_dedup"] == result["tokenizer"]["items"] == 60
    assert set(result["tokenizer"]["modality_weights"]) == {"text", "image", "collab"}
    assert result["test_result"]["recall@10"] > 0

    # In the trained tokenizer, a masked modality has weight 0 for exactly its items; the weights still sum to 1.
    from recbole.data import create_dataset, data_preparation

    from recbole_cemg.config import Config
    from recbole_cemg.model.cemg import CEMG

    config = Config("CEMG", "tiny", tiny_run_config["config_file_list"], settings)
    model = CEMG(config, data_preparation(config, create_dataset(config))[0]._dataset)
    model.load_checkpoint_state(torch.load(result["checkpoint"], weights_only=True)["state_dict"])
    items = torch.arange(1, model.n_items)
    weights = model.tokenizer.encode(model.tokenizer_inputs().rows(items))["weights"]
    tokens = [model.item_tokens[i] for i in items.tolist()]
    text_weight, image_weight = weights[:, 0], weights[:, 1]
    assert {t for t, w in zip(tokens, image_weight.tolist()) if w == 0} == {CORRUPT_IMAGE, NO_IMAGE}
    assert {t for t, w in zip(tokens, text_weight.tolist()) if w == 0} == set(NO_TEXT)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(items)))


def test_an_item_without_any_content_is_named_when_nothing_codes_it(tiny_run_config, feature_dir, caplog):
    from recbole.data import create_dataset, data_preparation

    from recbole_cemg.config import Config
    from recbole_cemg.model.cemg import CEMG

    settings = dict(tiny_run_config["config_dict"], modalities=["text", "image"], feature_path=str(feature_dir),
                    collab_in_fusion=False, tokenizer_epochs=10)
    config = Config("CEMG", "tiny", tiny_run_config["config_file_list"], settings)
    with caplog.at_level(logging.WARNING):
        model = CEMG(config, data_preparation(config, create_dataset(config))[0]._dataset)
    report = model.fit_tokenizer(show_progress=False)  # the item without content trains without NaN
    assert report.unique_after_dedup == report.items == 60 and np.isfinite(report.reconstruction_error)
    assert any(r.getMessage().startswith("1 item(s) (e.g. 'i3') have no feature in any of ['text', 'image']: with "
                                         "`collab_in_fusion: False` they share the code of an empty input")
               for r in caplog.records)
