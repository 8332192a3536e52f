"""Encode item text into a CEMG feature file, ``<dataset>.text.npz`` (format: ``recbole_cemg/data/features.py``).

The text of an item is built from columns of a RecBole atomic item file, joined as
``"Toy Story | 1995 | Animation Children's Comedy"`` (empty cells skipped). Items whose text is empty are left out
of the output, so the text modality is masked for them. Two kinds of encoder:

``hf:<hub name or folder>``      a Hugging Face model, mean-pooled over the attention mask (as sentence-transformers);
``open_clip:<model name>``       the text tower of an open_clip model, weights from ``--pretrained``.

Encoding is resumable: after every ``--chunk_size`` items the rows done so far are saved to ``<output>.partial.npz``;
a rerun with the same settings continues from there, and the partial file is removed once the output is written.

Examples::

    python dataset_scripts/encode_text.py --dataset ml-100k --encoder hf:sentence-transformers/all-MiniLM-L6-v2 \\
        --normalize --fp16
    python dataset_scripts/encode_text.py --item_file data/x.item --fields title brand \\
        --encoder open_clip:ViT-B-32 --pretrained laion2b_s34b_b79k
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing the plugin
from recbole_cemg.data.features import load_item_features, save_item_features  # noqa: E402
from recbole_cemg.errors import UserError, add_debug_flag, command_line  # noqa: E402

logger = logging.getLogger("encode_text")

OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")


# What to do after Ctrl-C, for encode_text and encode_images.
RESUME_HINT = "Finished chunks are kept in <output>.partial.npz; run the same command again to resume."


class EncodeError(UserError):
    """A problem the user can fix; ``main`` reports it without a traceback."""


class TextEncoder(Protocol):
    """Anything that embeds a batch of strings; ``name`` is recorded in the output file."""

    name: str

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Return one float vector per text, ``[len(texts), dim]``."""


def looks_like_path(source: str) -> bool:
    """Whether ``source`` names a local file or folder rather than a hub model or a pretrained tag."""
    return os.path.exists(source) or source.startswith(("/", "."))


def source_name(source: str) -> str:
    """How a model source is recorded: its base name for a local path, else as given."""
    return os.path.basename(os.path.normpath(source)) if looks_like_path(source) else source


class HFTextEncoder:
    """A Hugging Face model (AutoTokenizer + AutoModel), mean-pooled over the attention mask."""

    def __init__(self, source: str, device: str, max_length: int) -> None:
        from transformers import AutoModel, AutoTokenizer

        if looks_like_path(source) and not os.path.isdir(source):
            raise EncodeError(f"Encoder folder not found: {source}. Give a folder written by save_pretrained "
                              "(config.json, weights and tokenizer files) or a Hugging Face hub name.")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(device).eval()
        except (OSError, ValueError) as error:
            raise EncodeError(f"Cannot load the Hugging Face model '{source}': {error}\nGive a folder written "
                              "by save_pretrained, or a hub name (downloads need network or a cache).") from error
        self.name = f"hf:{source_name(source)}"
        self.device = device
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class OpenCLIPTextEncoder:
    """The text tower (``encode_text``) of an open_clip model."""

    def __init__(self, model_name: str, pretrained: str | None, device: str) -> None:
        import open_clip

        has_schema = model_name.startswith(OPEN_CLIP_SCHEMAS)
        if not has_schema and not pretrained:
            raise EncodeError(f"open_clip:{model_name} needs --pretrained: a tag (see open_clip.list_pretrained()) "
                              "or a checkpoint file; without it the weights would be random.")
        if not has_schema and model_name not in open_clip.list_models():
            raise EncodeError(f"Unknown open_clip model '{model_name}'; see open_clip.list_models(), or use "
                              "'local-dir:<folder with open_clip_config.json>'.")
        if pretrained and looks_like_path(pretrained) and not os.path.isfile(pretrained):
            raise EncodeError(f"Checkpoint file not found: {pretrained}. Give an open_clip checkpoint file or a "
                              "pretrained tag (see open_clip.list_pretrained()).")
        try:
            self.model = open_clip.create_model(model_name, pretrained=None if has_schema else pretrained,
                                                device=device).eval()
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as error:
            raise EncodeError(f"Cannot load the open_clip model '{model_name}' (pretrained '{pretrained}'): "
                              f"{error}") from error
        if not has_schema:
            self.name = f"open_clip:{model_name}/{source_name(pretrained)}"
        elif model_name.startswith("local-dir:"):
            self.name = f"open_clip:{source_name(model_name.removeprefix('local-dir:'))}"
        else:
            self.name = f"open_clip:{model_name}"
        self.device = device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()


def load_encoder(spec: str, pretrained: str | None, device: str, max_length: int) -> TextEncoder:
    """Build the encoder named by ``hf:<source>`` or ``open_clip:<model name>``."""
    kind, _, source = spec.partition(":")
    if kind == "hf" and source:
        return HFTextEncoder(source, device, max_length)
    if kind == "open_clip" and source:
        return OpenCLIPTextEncoder(source, pretrained, device)
    raise EncodeError(f"--encoder must be 'hf:<hub name or folder>' or 'open_clip:<model name>', got '{spec}'.")


def read_item_texts(item_file: str, fields: Sequence[str] | None = None,
                    id_field: str = "item_id") -> tuple[list[str], list[str]]:
    """Item tokens and texts of a RecBole atomic item file; ``fields`` defaults to every column but the id."""
    if not os.path.isfile(item_file):
        raise EncodeError(f"Item file not found: {item_file}. Pass --item_file PATH, or --dataset NAME with "
                          "--data_path DIR holding NAME.item (RecBole atomic format).")
    with open(item_file, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    if not rows:
        raise EncodeError(f"{item_file} is empty; expected a header such as 'item_id:token<TAB>title:token_seq'.")
    columns = [cell.rpartition(":")[0] or cell for cell in rows[0]]
    if id_field not in columns:
        raise EncodeError(f"{item_file}: no '{id_field}' column (columns: {columns}); set --id_field.")
    fields = list(fields) if fields else [c for c in columns if c != id_field]
    unknown = [f for f in fields if f not in columns]
    if unknown or not fields:
        raise EncodeError(f"{item_file}: cannot build text from fields {unknown or fields}; columns are {columns}.")
    logger.info(f"reading {item_file}: text from {fields}")

    id_col, text_cols = columns.index(id_field), [columns.index(f) for f in fields]
    tokens, texts = [], []
    for row in rows[1:]:
        row = row + [""] * (len(columns) - len(row))
        tokens.append(row[id_col].strip())
        texts.append(" | ".join(cell for cell in (row[c].strip() for c in text_cols) if cell))
    unique, counts = np.unique(tokens, return_counts=True)
    if (counts > 1).any():
        raise EncodeError(f"{item_file}: item '{unique[counts > 1][0]}' appears more than once; keep one row per item.")
    return tokens, texts


def load_partial(path: str, run_tag: str) -> dict[str, np.ndarray]:
    """Rows saved by an interrupted run with the same settings (``run_tag``), by item token."""
    if not os.path.exists(path):
        return {}
    stored = load_item_features(path)
    if stored.encoder != run_tag:
        raise EncodeError(f"{path} was left by an interrupted run with other settings or other item texts "
                          f"('{stored.encoder}', now '{run_tag}'). Delete it to start over.")
    logger.info(f"resuming from {path}: {len(stored.item_tokens)} items already encoded")
    return dict(zip(stored.item_tokens.tolist(), stored.features, strict=True))


def encode_resumable(tokens: list[str], texts: list[str], encoder: TextEncoder, partial_path: str, run_tag: str,
                     batch_size: int = 64, chunk_size: int = 2048, normalize: bool = False) -> np.ndarray:
    """Float32 features in the order of ``tokens``; rows done so far are saved to ``partial_path`` after each chunk."""
    done = load_partial(partial_path, run_tag)
    todo = [i for i, token in enumerate(tokens) if token not in done]
    with tqdm(total=len(tokens), initial=len(tokens) - len(todo), unit="item", desc="encoding") as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b:b + batch_size]
                vectors = encoder.encode([texts[i] for i in batch])
                if normalize:
                    vectors = F.normalize(vectors, dim=-1)
                bad = ~torch.isfinite(vectors).all(dim=1)
                if bad.any():
                    i = batch[int(bad.nonzero()[0])]
                    raise EncodeError(f"{encoder.name} produced NaN/inf for item '{tokens[i]}' (text '{texts[i]}').")
                done.update(zip((tokens[i] for i in batch), vectors.cpu().numpy(), strict=True))
                bar.update(len(batch))
            save_item_features(partial_path, list(done), np.stack(list(done.values())), run_tag)
    return np.stack([done[token] for token in tokens])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments, with the item file and output paths filled in."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("items")
    source.add_argument("--dataset", help="dataset name: reads <data_path>/<dataset>.item")
    source.add_argument("--data_path", help="folder of the atomic files (default: dataset/<dataset>)")
    source.add_argument("--item_file", help="the .item file itself, instead of --dataset/--data_path")
    source.add_argument("--fields", nargs="+", help="columns forming the text (default: all but the id column)")
    source.add_argument("--id_field", default="item_id", help="the item id column (default: item_id)")
    model = parser.add_argument_group("encoder")
    model.add_argument("--encoder", required=True, help="hf:<hub name or folder> or open_clip:<model name>")
    model.add_argument("--pretrained", help="open_clip weights: a pretrained tag or a checkpoint file")
    model.add_argument("--encoder_name", help="name recorded in the file (default: derived from --encoder)")
    model.add_argument("--max_length", type=int, default=256, help="tokens per text for hf encoders (default: 256)")
    model.add_argument("--normalize", action="store_true", help="L2-normalise every vector")
    run = parser.add_argument_group("run")
    run.add_argument("--output", help="feature file (default: <data_path>/<dataset>.text.npz)")
    run.add_argument("--fp16", action="store_true", help="store float16 instead of float32")
    run.add_argument("--batch_size", type=int, default=64, help="texts per forward pass (default: 64)")
    run.add_argument("--chunk_size", type=int, default=2048,
                     help="items encoded between saves of the partial file (default: 2048)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device (default: cuda if available, else cpu)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if bool(args.dataset) == bool(args.item_file):
        parser.error("give either --dataset (with optional --data_path) or --item_file")
    if args.item_file is None:
        args.item_file = os.path.join(args.data_path or os.path.join("dataset", args.dataset), f"{args.dataset}.item")
    if args.output is None:
        dataset = args.dataset or Path(args.item_file).name.removesuffix(".item")
        args.output = os.path.join(os.path.dirname(args.item_file), f"{dataset}.text.npz")
    return args


def run(args: argparse.Namespace) -> None:
    """Read the texts, encode them resumably and write the feature file."""
    all_tokens, all_texts = read_item_texts(args.item_file, args.fields, args.id_field)
    keep = [i for i, text in enumerate(all_texts) if text]
    if not keep:
        raise EncodeError(f"{args.item_file}: all {len(all_texts)} items have empty text; choose other --fields.")
    tokens, texts = [all_tokens[i] for i in keep], [all_texts[i] for i in keep]
    logger.info(f"{len(tokens)} items with text, {len(all_texts) - len(tokens)} with empty text left out")

    encoder = load_encoder(args.encoder, args.pretrained, args.device, args.max_length)
    name = args.encoder_name or encoder.name
    logger.info(f"encoder {name} ({args.encoder}) on {args.device}")

    settings = repr((args.encoder, args.pretrained, args.max_length, args.normalize, tokens, texts))
    run_tag = f"partial {name} {hashlib.sha256(settings.encode()).hexdigest()[:16]}"
    partial_path = f"{args.output}.partial.npz"
    features = encode_resumable(tokens, texts, encoder, partial_path, run_tag, args.batch_size, args.chunk_size,
                                args.normalize)
    features = write_features(args.output, tokens, features, name, partial_path, args.fp16)
    logger.info(f"wrote {args.output}: features {features.shape} {features.dtype}, "
                f"{os.path.getsize(args.output) / 2**20:.2f} MiB")


def write_features(output: str, tokens, features: np.ndarray, name: str, partial_path: str,
                   fp16: bool) -> np.ndarray:
    """Store the finished features (as float16 if asked, refusing overflow) and drop the partial file."""
    if fp16:
        features = features.astype(np.float16)
        if not np.isfinite(features).all():
            raise EncodeError("features overflow float16; drop --fp16 or add --normalize. "
                              f"Encoded rows are kept in {partial_path}.")
    save_item_features(output, tokens, features, name)
    os.remove(partial_path)
    return features


@command_line("encode_text", interrupted=RESUME_HINT)
def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors and Ctrl-C end the program with a short message instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
