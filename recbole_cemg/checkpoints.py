"""Which run and which data a file belongs to: unique checkpoint names, the data-set fingerprint, and a reader for
checkpoints of unknown origin.

RecBole names a checkpoint ``<model>-<time>.pth`` to the second, so two runs started in the same second would
write over each other's files: ``unique_checkpoint_path`` adds a random suffix. A file read back into a run
(``collab_source``, ``tokenizer_path``, ``--resume``) must come from the same data: rows are matched by internal
item id, so another data set with as many items, or a run that trained on the items held out for cold start, would
be accepted silently. Every file the plugin writes records ``data_fingerprint`` (a hash of the item tokens, the
cold-item mask and the training interactions), and ``check_origin`` compares it where the file is read.
A checkpoint given by the user may come from anywhere: ``read_checkpoint`` unpickles only tensors and plain
values; any other object (a RecBole ``Config``, an enum) becomes an inert ``Recorded`` holding its state, and no
code of the file's classes runs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import secrets
import tempfile
import zipfile
from typing import Any

import torch

from recbole_cemg.errors import InputError, MissingFileError

FINGERPRINT_KEY = "data_fingerprint"
# Globals a checkpoint of tensors and plain values needs; everything else is read as an inert ``Recorded``.
TRUSTED_GLOBALS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch", "device"), ("torch", "Size"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"),
}


def unique_checkpoint_path(path: str) -> str:
    """``saved/CEMG-Dec-01-2026_09-10-11.pth`` -> ``saved/CEMG-Dec-01-2026_09-10-11-a1b2c3.pth``, a name no file of
    the folder starts with (the suffix comes from the OS, not from the run's seeded generators)."""
    stem, extension = os.path.splitext(path)
    folder = os.path.dirname(path) or "."
    taken = os.listdir(folder) if os.path.isdir(folder) else []
    while True:
        candidate = f"{stem}-{secrets.token_hex(3)}"
        if not any(name.startswith(os.path.basename(candidate)) for name in taken):
            return candidate + extension


def check_checkpoint_dir(folder: str) -> None:
    """Stop before any work if the run could not write its checkpoints into ``folder``."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"`checkpoint_dir` = {folder!r}: the run cannot write there ({error.strerror or error}). "
                         "Point --checkpoint_dir at a writable folder.") from None


def data_fingerprint(dataset, cold: torch.Tensor | None) -> str:
    """A hash of what a trained file depends on: the item tokens (in internal id order), the cold-start items held
    out, and the training interactions' (user, item) pairs."""
    digest = hashlib.sha256()
    digest.update("\0".join(map(str, dataset.field2id_token[dataset.iid_field])).encode())
    mask = cold if cold is not None else torch.zeros(dataset.item_num, dtype=torch.bool)
    digest.update(mask.numpy().tobytes())
    pairs = torch.stack([dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]])
    digest.update(pairs.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


def run_identity(config) -> dict[str, Any]:
    """What the plugin records in every file it writes, for ``check_origin``."""
    return {"model": config["model"], "dataset": config["dataset"], FINGERPRINT_KEY: config[FINGERPRINT_KEY]}


def check_origin(recorded: dict[str, Any], config, path: str, key: str, rows: int | None = None,
                 n_items: int | None = None) -> None:
    """Refuse the file ``path`` (given as config ``key``) unless it was made from this run's data: the same
    fingerprint, or, for a file without one (RecBole's own checkpoints), the same data-set name, ``rows`` item rows
    for the data set's ``n_items`` and no held-out cold items."""
    what = f"`{key}` {path}"
    expected = config[FINGERPRINT_KEY]
    fingerprint = recorded.get(FINGERPRINT_KEY)
    if fingerprint:
        if expected and fingerprint != expected:
            raise InputError(f"{what} was made from other data (data fingerprint {fingerprint}, this run's is "
                             f"{expected}: another data set, filtering, split or cold_item_ratio). Use a file of a "
                             "run on this data, or leave it out to train anew.")
        return
    if recorded.get("dataset") not in (None, config["dataset"]):
        raise InputError(f"{what} was trained on data set '{recorded['dataset']}', this run is on "
                         f"'{config['dataset']}'. Use a file of a run on this data set.")
    if rows is not None and rows not in (n_items, n_items + 1):  # BERT4Rec adds a mask row
        raise InputError(f"{what} has {rows} item rows, the data set has {n_items}. Was it trained on another data "
                         "set or another filtering?")
    if config["cold_item_ratio"]:
        raise InputError(f"{what} records no data fingerprint, so nothing shows it was trained without the cold-start "
                         "items this run holds out (cold_item_ratio). Use a file written by this plugin with the "
                         "same cold_item_ratio and seed, or train the collaborative model in the run.")


class Recorded:
    """An object of a class ``read_checkpoint`` does not trust: its class name and state, none of its code."""

    name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Recorded":
        instance = super().__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __setstate__(self, state: Any) -> None:
        self.state = state


def recorded_config(value: Any) -> dict[str, Any]:
    """The plain values (str, numbers, lists, dicts, None) of a RecBole ``Config`` read by ``read_checkpoint``."""
    state = value.state if isinstance(value, Recorded) and isinstance(value.state, dict) else {}
    final = state.get("final_config_dict")
    return {k: v for k, v in final.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))} \
        if isinstance(final, dict) else {}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in TRUSTED_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                 torch.dtype)):
            return super().find_class(module, name)
        if module.startswith("numpy") and name.endswith("DType"):
            return super().find_class(module, name)
        return type(name, (Recorded,), {"name": f"{module}.{name}"})


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load`` whose unpickler only builds trusted globals."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load())


def read_checkpoint(path: str, key: str) -> dict[str, Any]:
    """The content of the torch checkpoint ``path`` (named by config ``key``), tensors and plain values only."""
    if os.path.isdir(path):
        raise InputError(f"`{key}` = {path!r} is a folder; give the checkpoint file (.pth) inside it.")
    if not os.path.isfile(path):
        raise MissingFileError(f"`{key}` = {path!r}: no such file. Give the path of a checkpoint (.pth).")
    try:
        content = torch.load(path, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise InputError(f"`{key}` = {path!r}: not a readable torch checkpoint ({str(error).splitlines()[0][:120]}). "
                         "Point it at a complete .pth file.") from None
    if not isinstance(content, dict):
        raise InputError(f"`{key}` = {path!r}: not a checkpoint (a {type(content).__name__}, not a dict of its "
                         "parts). Point it at a .pth file written by RecBole or this plugin.")
    return content
