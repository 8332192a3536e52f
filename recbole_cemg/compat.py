"""Patches that let RecBole 1.2.1 run on current numpy, pandas, torch and without ray.

Every breakage is fixed here, once, when ``recbole_cemg`` is imported, so that neither users nor the rest of the
plugin have to care which library versions are installed:

* numpy >= 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which ``Config.compatibility_settings``
  reads to re-create ``np.float``/``np.bool``/... (still used by RecBole's metrics and models).
* pandas >= 3 (copy-on-write) turned ``df[col].fillna(..., inplace=True)`` into a no-op, so RecBole's
  ``Dataset._load_feat`` would split NaN (an empty sequence cell) as a string and ``Dataset._fill_nan`` would leave
  NaN in token and float columns. pandas 3 also stopped trying ``Series.agg(func)`` element-wise first, which
  RecBole's processing of sequence fields relies on (``.agg(len)`` per row, ``.agg(np.concatenate)`` as a whole).
  Both are restored only while a dataset is being built (``Dataset._from_scratch``).
* torch >= 2.6 loads with ``weights_only=True`` by default; RecBole's own checkpoints hold a ``Config`` object, so
  ``Trainer.evaluate(load_best_model=True)`` and ``Trainer.resume_checkpoint`` fail. Those two are re-wrapped to load
  the file they wrote themselves with an explicit ``weights_only=False``.
* ``recbole.quick_start`` imports ray at import time; the plugin never imports it (see ``quick_start.py``).
* hyperopt >= 0.2.7 draws from ``np.random.Generator`` (``rng.integers``), but RecBole's exhaustive search hands it a
  legacy ``RandomState``; while that search samples, its ``RandomState`` also answers ``integers``.
* RecBole's SINE module calls ``torch.autograd.set_detect_anomaly(True)`` when it is imported, which every lookup of a
  sequential model does: autograd anomaly detection then slows down every training run in the process. It is
  imported here once and anomaly detection switched back off.
* RecBole's ``ensure_dir`` checks for a folder, then creates it: two processes of one run race, and the slower one
  fails with FileExistsError. It becomes ``os.makedirs(..., exist_ok=True)``.
* RecBole wraps every model as ``DistributedDataParallel(model, device_ids=[local_rank])`` in multi-process runs;
  torch refuses ``device_ids`` for a model on the CPU, so CPU processes (gloo) get ``device_ids=None``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Callable, Iterator

import numpy as np
import torch

_PATCHED = False


def patch_numpy_aliases() -> None:
    """Give numpy 2 the alias names that RecBole's ``compatibility_settings`` reads."""
    for name, value in {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "bool": np.bool_,
        "int": np.int_,
        "float": np.float64,
        "complex": np.complex128,
        "object": np.object_,
        "str": np.str_,
        "long": np.int_,
        "unicode": np.str_,
    }.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _fill_nan(self) -> None:
    """``Dataset._fill_nan`` without in-place ``fillna`` on a column (a no-op under pandas copy-on-write)."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def _trusted_torch_load(original: Callable) -> Callable:
    """``torch.load`` that loads full pickles unless the caller says otherwise (RecBole's own checkpoints)."""

    @functools.wraps(original)
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    return load


def _read_csv_with_empty_sequences(original: Callable) -> Callable:
    """``pandas.read_csv`` that turns empty cells of ``*_seq`` columns into empty strings, as RecBole expects."""

    @functools.wraps(original)
    def read_csv(*args, **kwargs):
        frame = original(*args, **kwargs)
        for column in frame.columns:
            if str(column).rsplit(":", 1)[-1].endswith("seq"):
                frame[column] = frame[column].fillna("")
        return frame

    return read_csv


def _elementwise_first_agg(original: Callable) -> Callable:
    """``Series.agg`` as in pandas < 3: apply ``func`` to each element, or to the whole Series if that fails."""

    @functools.wraps(original)
    def agg(self, func=None, *args, **kwargs):
        if callable(func) and not args and not kwargs:
            try:
                return self.apply(func)
            except (ValueError, AttributeError, TypeError):
                return func(self)
        return original(self, func, *args, **kwargs)

    return agg


def _random_state_with_integers(original: type) -> type:
    """``RandomState`` with the ``Generator.integers`` method that hyperopt >= 0.2.7 calls."""

    class RandomState(original):
        def integers(self, low, high=None, size=None):
            return self.randint(low, high, size)

    return RandomState


Replacement = tuple[object, str, Callable[[Callable], Callable]]


def _ensure_dir(dir_path: str) -> None:
    os.makedirs(dir_path, exist_ok=True)


def _data_parallel_on_any_device(original: type) -> Callable:
    def data_parallel(module: torch.nn.Module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        return original(module, device_ids=None if on_cpu else device_ids, **kwargs)

    return data_parallel


@contextlib.contextmanager
def _replaced(replacements: list[Replacement]) -> Iterator[None]:
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    for owner, name, make_replacement in replacements:
        setattr(owner, name, make_replacement(getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def _during(method: Callable, *replacements: Replacement) -> Callable:
    """Wrap ``method`` so that each ``owner.name`` is replaced while it runs (and only then)."""
    if getattr(method, "__cemg_patched__", False):
        return method

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _replaced(list(replacements)):
            return method(*args, **kwargs)

    wrapper.__cemg_patched__ = True
    return wrapper


def _quiet(method: Callable) -> Callable:
    """Silence pandas' warning about RecBole's (now patched-around) in-place ``fillna`` on a column."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="A value is being set on a copy of a DataFrame or Series")
            return method(*args, **kwargs)

    wrapper.__cemg_patched__ = True
    return wrapper


def apply() -> None:
    """Apply every patch once; safe to call many times."""
    global _PATCHED
    if _PATCHED:
        return
    patch_numpy_aliases()

    import pandas as pd
    from recbole.data.dataset import Dataset
    from recbole.trainer import Trainer
    from recbole.trainer import trainer as trainer_module

    Dataset._fill_nan = _fill_nan
    Dataset._from_scratch = _quiet(_during(Dataset._from_scratch, (pd, "read_csv", _read_csv_with_empty_sequences),
                                           (pd.Series, "agg", _elementwise_first_agg)))
    for name in ("evaluate", "resume_checkpoint"):
        setattr(Trainer, name, _during(getattr(Trainer, name), (torch, "load", _trusted_torch_load)))
    trainer_module.DistributedDataParallel = _data_parallel_on_any_device(trainer_module.DistributedDataParallel)
    import recbole.data.utils
    import recbole.utils.logger
    from recbole.data.dataset import dataset as dataset_module

    for module in (recbole.utils, recbole.utils.utils, recbole.utils.logger, recbole.data.utils, dataset_module,
                   trainer_module):
        module.ensure_dir = _ensure_dir
    import recbole.model.sequential_recommender  # noqa: F401  (its sine module turns anomaly detection on)

    torch.autograd.set_detect_anomaly(False)
    from recbole.trainer import hyper_tuning

    hyper_tuning.exhaustive_search = _during(hyper_tuning.exhaustive_search,
                                             (np.random, "RandomState", _random_state_with_integers))
    _PATCHED = True
