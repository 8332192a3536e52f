"""dataset_scripts/encode_text.py on tiny random encoders: CPU only, no network."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import load_script


ITEMS = """item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq
1\tToy Story\t1995\tAnimation Comedy
2\tHeat\t1995\tAction Thriller
3\t\t\t
4\tToy Story\t1995\tAnimation Comedy
5\tCasino\t\tDrama
6\tFargo\t1996\tCrime Drama
"""
WITH_TEXT = ["1", "2", "4", "5", "6"]  # item 3 has no text
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "|", "toy", "story", "heat", "casino", "fargo", "1995", "1996",
         "animation", "comedy", "action", "thriller", "drama", "crime"]
@pytest.fixture(scope="module")
def encode_text():
    """The script as a module (it puts the project root on sys.path, so this works from any directory)."""
    return load_script("encode_text")


def load_item_features(path: str):
    """The plugin's reader, imported once the ``encode_text`` fixture has put the project root on sys.path."""
    from recbole_cemg.data.features import load_item_features

    return load_item_features(path)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with hidden size 32 and a word-level vocabulary, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # positional: transformers 4 calls it vocab_file, 5 calls it vocab (and silently ignores vocab_file=)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def item_file(tmp_path) -> Path:
    path = tmp_path / "toy.item"
    path.write_text(ITEMS)
    return path


def run_hf(encode_text, item_file: Path, model: Path, output: Path, *extra: str) -> None:
    encode_text.main(["--item_file", str(item_file), "--encoder", f"hf:{model}", "--output", str(output),
                      "--device", "cpu", "--batch_size", "2", "--chunk_size", "2", *extra])


def count_batches(monkeypatch, encode_text, interrupt_at: int | None = None) -> list[int]:
    """Record the size of every batch the HF encoder gets; raise KeyboardInterrupt on batch number ``interrupt_at``."""
    sizes = []
    encode = encode_text.HFTextEncoder.encode

    def counted(self, texts):
        sizes.append(len(texts))
        if len(sizes) == interrupt_at:
            raise KeyboardInterrupt
        return encode(self, texts)

    monkeypatch.setattr(encode_text.HFTextEncoder, "encode", counted)
    return sizes


def test_hf_encoder_writes_item_features(encode_text, tiny_bert, item_file, tmp_path, caplog):
    caplog.set_level("INFO")
    output = tmp_path / "toy.text.npz"
    run_hf(encode_text, item_file, tiny_bert, output)

    stored = load_item_features(str(output))
    assert stored.item_tokens.tolist() == WITH_TEXT
    assert stored.features.shape == (len(WITH_TEXT), 32)
    assert stored.features.dtype == np.float32
    assert np.isfinite(stored.features).all()
    assert stored.encoder == "hf:tiny-bert"
    toy_story, toy_story_again = stored.features[0], stored.features[WITH_TEXT.index("4")]
    np.testing.assert_allclose(toy_story, toy_story_again, atol=1e-5)  # same text, different batches
    assert not np.allclose(toy_story, stored.features[1])
    assert "1 with empty text left out" in caplog.text
    assert not Path(f"{output}.partial.npz").exists()


def test_hf_encoder_fp16_normalized_with_default_output(encode_text, tiny_bert, tmp_path):
    data_path = tmp_path / "toy"
    data_path.mkdir()
    (data_path / "toy.item").write_text(ITEMS)
    encode_text.main(["--dataset", "toy", "--data_path", str(data_path), "--fields", "title", "genre",
                      "--encoder", f"hf:{tiny_bert}", "--encoder_name", "hf:org/tiny", "--normalize", "--fp16",
                      "--device", "cpu"])

    stored = load_item_features(str(data_path / "toy.text.npz"))
    assert stored.features.dtype == np.float16
    assert stored.encoder == "hf:org/tiny"
    np.testing.assert_allclose(np.linalg.norm(stored.features.astype(np.float32), axis=1), 1.0, atol=1e-3)


def test_interrupted_run_resumes_to_the_same_features(encode_text, tiny_bert, item_file, tmp_path, monkeypatch,
                                                       stops_with):
    reference = tmp_path / "reference.npz"
    run_hf(encode_text, item_file, tiny_bert, reference)

    output = tmp_path / "resumed.npz"
    partial = Path(f"{output}.partial.npz")
    count_batches(monkeypatch, encode_text, interrupt_at=2)  # chunk_size == batch_size: batch 2 opens chunk 2
    with stops_with("run the same command again to resume", code=130):
        run_hf(encode_text, item_file, tiny_bert, output)
    assert not output.exists()
    assert load_item_features(str(partial)).item_tokens.tolist() == ["1", "2"]

    monkeypatch.undo()
    batches = count_batches(monkeypatch, encode_text)
    run_hf(encode_text, item_file, tiny_bert, output)
    assert sum(batches) == len(WITH_TEXT) - 2  # only the items missing from the partial file
    assert not partial.exists()
    resumed, expected = load_item_features(str(output)), load_item_features(str(reference))
    assert resumed.item_tokens.tolist() == expected.item_tokens.tolist()
    np.testing.assert_allclose(resumed.features, expected.features, atol=1e-6)
    assert resumed.encoder == expected.encoder


def test_partial_file_of_other_settings_is_refused(encode_text, tiny_bert, item_file, tmp_path, stops_with):
    output = tmp_path / "toy.text.npz"
    partial = f"{output}.partial.npz"
    encode_text.save_item_features(partial, ["1"], np.zeros((1, 32), dtype=np.float32), "partial hf:other 0")
    with stops_with("Delete it to start over"):
        run_hf(encode_text, item_file, tiny_bert, output)


def test_open_clip_text_tower_from_checkpoint(encode_text, item_file, tmp_path, tiny_clip):
    import open_clip

    model, checkpoint = tiny_clip

    output = tmp_path / "toy.text.npz"
    encode_text.main(["--item_file", str(item_file), "--encoder", "open_clip:tiny-clip", "--pretrained",
                      str(checkpoint), "--output", str(output), "--device", "cpu"])

    stored = load_item_features(str(output))
    assert stored.item_tokens.tolist() == WITH_TEXT
    assert stored.features.shape == (len(WITH_TEXT), 16)
    assert stored.encoder == "open_clip:tiny-clip/tiny-clip.pt"
    with torch.no_grad():  # the checkpoint's weights, not a fresh random model
        expected = model.encode_text(open_clip.get_tokenizer("tiny-clip")(["Heat | 1995 | Action Thriller"]))
    np.testing.assert_allclose(stored.features[1], expected[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("problem, args, message", [
    ("missing item file", ["--item_file", "{tmp}/nowhere/x.item", "--encoder", "hf:{model}"],
     "Item file not found: {tmp}/nowhere/x.item"),
    ("missing encoder folder", ["--item_file", "{item}", "--encoder", "hf:{tmp}/no-model"],
     "Encoder folder not found: {tmp}/no-model"),
    ("only empty text", ["--item_file", "{item}", "--fields", "year", "--encoder", "hf:{model}"], None),
    ("unknown field", ["--item_file", "{item}", "--fields", "plot", "--encoder", "hf:{model}"], "columns are"),
    ("open_clip without weights", ["--item_file", "{item}", "--encoder", "open_clip:ViT-B-32"], "needs --pretrained"),
    ("missing checkpoint", ["--item_file", "{item}", "--encoder", "open_clip:ViT-B-32", "--pretrained",
                            "{tmp}/clip.pt"], "Checkpoint file not found: {tmp}/clip.pt"),
])
def test_user_errors_are_one_clear_line(encode_text, tiny_bert, tmp_path, problem, args, message, stops_with):
    item = tmp_path / "toy.item"
    item.write_text(ITEMS if problem != "only empty text" else "item_id:token\tyear:token\n1\t\n2\t \n")
    fill = {"tmp": tmp_path, "item": item, "model": tiny_bert}
    message = (message or "{item}: all 2 items have empty text").format(**fill)
    with stops_with(re.escape(message)):
        encode_text.main([arg.format(**fill) for arg in args] + ["--device", "cpu"])
