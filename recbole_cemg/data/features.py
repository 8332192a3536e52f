"""Item feature files: how modality features (text, image, ...) reach CEMG, aligned to RecBole's item ids.

One file per modality, ``<feature_path>/<dataset>.<modality>.npz``, holding three arrays:

``item_id``   the item tokens exactly as in the dataset's atomic files (strings), one per row;
``features``  a float matrix ``[rows, dim]`` (float16 or float32), finite;
``encoder``   a string naming the model that produced the features (``""`` when unknown);
``data_fingerprint`` (optional) the fingerprint of the data the features were learned from
              (``recbole_cemg.checkpoints``; the plugin's ``.collab.npz`` files carry it).

Items of the dataset missing from a file simply lack that modality (it is masked in the fusion). Rows are matched to
RecBole's internal ids through ``dataset.field2token_id``, so the order of the file does not matter.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch

from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.io import atomic_write
from recbole_cemg.shipped import SHIPPED_ROOT


@dataclass
class ItemFeatures:
    """Features as stored in a file: one row per item token."""

    item_tokens: np.ndarray
    features: np.ndarray
    encoder: str = ""
    fingerprint: str = ""


@dataclass
class AlignedFeatures:
    """Features indexed by RecBole's internal item id; ``mask[i]`` says whether item ``i`` has this modality."""

    name: str
    values: torch.Tensor
    mask: torch.Tensor
    encoder: str = ""


def save_item_features(path: str, item_tokens, features: np.ndarray, encoder: str = "",
                       fingerprint: str | None = None) -> None:
    """Write a feature file atomically: a crash leaves either the old file or the new one, never half of one."""
    features = np.asarray(features)
    item_tokens = np.asarray([str(t) for t in item_tokens])
    if features.ndim != 2 or len(item_tokens) != len(features):
        raise ValueError(f"{path}: need one feature row per item token, got {len(item_tokens)} tokens and "
                         f"features of shape {features.shape}.")
    with atomic_write(path) as f:
        np.savez(f, item_id=item_tokens, features=features, encoder=np.asarray(encoder),
                 data_fingerprint=np.asarray(fingerprint or ""))


def load_item_features(path: str) -> ItemFeatures:
    """Read a feature file and check it is well formed; every problem names the file."""
    if not os.path.isfile(path):
        raise MissingFileError(f"Feature file not found: {path}. Create it with dataset_scripts/encode_text.py "
                                "(or any tool writing the format described in the README), or remove the modality "
                                "from `modalities`.")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an archive with 'item_id' and 'features'")
        with data:
            missing = {"item_id", "features"} - set(data.files)
            if missing:
                raise ValueError(f"missing array(s) {sorted(missing)}; expected 'item_id' and 'features'")
            tokens = data["item_id"]
            features = data["features"]
            encoder = str(data["encoder"]) if "encoder" in data.files else ""
            fingerprint = str(data["data_fingerprint"]) if "data_fingerprint" in data.files else ""
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"{path}: not a readable .npz feature file ({error}).") from error
    if tokens.ndim != 1 or tokens.dtype.kind not in "US" or not len(tokens):
        raise InputError(f"{path}: 'item_id' must be a non-empty 1-D array of the item tokens as strings (as in the "
                         f"atomic files), got {tokens.dtype} of shape {tokens.shape}. Write the tokens with str(), "
                         "one per feature row.")
    tokens = tokens.astype(str)
    if features.ndim != 2 or features.shape[0] != tokens.shape[0]:
        raise InputError(f"{path}: 'features' must be a matrix with one row per 'item_id' ({tokens.shape[0]} ids), "
                         f"got shape {features.shape}.")
    if not np.issubdtype(features.dtype, np.floating):
        raise InputError(f"{path}: 'features' must be floating point, got {features.dtype}.")
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} row(s) contain NaN or inf, e.g. item '{tokens[bad][0]}'. "
                         "Re-extract the features for these items.")
    unique, counts = np.unique(tokens, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: duplicate item tokens, e.g. '{unique[counts > 1][0]}' "
                         f"({int((counts > 1).sum())} duplicated). Keep one row per item.")
    return ItemFeatures(tokens, features, encoder, fingerprint)


def align_item_features(stored: ItemFeatures, token2id: dict, n_items: int, name: str, source: str,
                        unknown_items: str = "error") -> AlignedFeatures:
    """Place each stored row at its item's internal id; items without a row are masked."""
    ids = np.fromiter((token2id.get(t, -1) for t in stored.item_tokens), dtype=np.int64, count=len(stored.item_tokens))
    unknown = ids < 0
    if unknown.all():
        raise InputError(f"{source}: none of its {len(ids)} item tokens is an item of the dataset (e.g. "
                         f"'{stored.item_tokens[0]}'). Is it the feature file of another dataset?")
    if unknown.any() and unknown_items != "ignore":
        raise InputError(f"{source}: {int(unknown.sum())} item token(s) are not items of the dataset, e.g. "
                         f"'{stored.item_tokens[unknown][0]}'. If the dataset config filters items out, set "
                         "`feature_unknown_items: ignore`.")
    values = torch.zeros(n_items, stored.features.shape[1], dtype=torch.float32)
    mask = torch.zeros(n_items, dtype=torch.bool)
    values[ids[~unknown]] = torch.from_numpy(stored.features[~unknown].astype(np.float32))
    mask[ids[~unknown]] = True
    mask[0] = False  # the padding item
    return AlignedFeatures(name, values, mask, stored.encoder)


def resolve_path(path: str) -> str:
    """A relative path is looked up from the working directory, then from the folder of the plugin's shipped files
    (the checkout's root), so a repository-relative path also works from elsewhere."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(SHIPPED_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def feature_file(config, modality: str) -> str:
    """Where the features of ``modality`` live: ``feature_files[modality]`` or ``<feature_path>/<dataset>.<modality>.npz``."""
    explicit = (config["feature_files"] or {}).get(modality)
    if explicit:
        return resolve_path(explicit)
    directory = config["feature_path"] or config["data_path"]
    return os.path.join(resolve_path(directory), f"{config['dataset']}.{modality}.npz")


def load_modalities(config, dataset, modalities: list[str]) -> list[AlignedFeatures]:
    """Load and align every listed content modality of the dataset's items.

    An item absent from a modality's file (its image was missing or corrupt, its text empty) has that modality
    masked; the log names such items, and those with no modality at all (coded from their collaborative embedding
    alone, or with ``collab_in_fusion: False`` from nothing but the de-duplication level).
    """
    logger = getLogger()
    item_field = dataset.iid_field
    token2id, tokens = dataset.field2token_id[item_field], dataset.field2id_token[item_field]
    aligned = []
    for modality in modalities:
        path = feature_file(config, modality)
        feats = align_item_features(load_item_features(path), token2id, dataset.item_num, modality, path,
                                    config["feature_unknown_items"] or "error")
        logger.info(f"modality '{modality}' from {path}: dim {feats.values.shape[1]}, "
                    f"{int(feats.mask.sum())}/{dataset.item_num - 1} items, encoder '{feats.encoder or 'unknown'}'")
        lacking = _items_without(feats.mask, tokens)
        if lacking:
            logger.warning(f"modality '{modality}': {lacking} have no feature in {path}; it is masked for them.")
        aligned.append(feats)
    encoders = {f.encoder for f in aligned if f.encoder}
    if len(encoders) > 1:
        logger.warning(f"Modalities were encoded by different models ({sorted(encoders)}); this is fine for "
                       "separate towers, but check it is intended.")
    bare = _items_without(torch.stack([f.mask for f in aligned]).any(0), tokens) if aligned else ""
    if bare:
        logger.warning(f"{bare} have no feature in any of {modalities}: " + (
            "they are coded from their collaborative embedding alone." if config["collab_in_fusion"] else
            "with `collab_in_fusion: False` they share the code of an empty input and are told apart only by the "
            "de-duplication level. Set collab_in_fusion: True, or provide their features."
            if config["model"] == "CEMG" else "they have no content to be ranked by."))
    return aligned


def _items_without(mask: torch.Tensor, tokens) -> str:
    """'N item(s) (e.g. 'a', 'b')' for the items (not the padding row) where ``mask`` is False; '' if none."""
    missing = torch.nonzero(~mask[1:]).flatten() + 1
    if not len(missing):
        return ""
    examples = ", ".join(f"'{tokens[i]}'" for i in missing[:5].tolist())
    return f"{len(missing)} item(s) (e.g. {examples})"
