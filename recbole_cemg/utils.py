"""Find models and trainers: the plugin's first, then every RecBole built-in."""

from __future__ import annotations

import functools
import importlib

from recbole.trainer import Trainer
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_cemg.errors import InputError

_PLUGIN_MODELS = {"CEMG": "recbole_cemg.model.cemg", "ContentSimilarity": "recbole_cemg.model.content_similarity"}
_PLUGIN_TRAINERS = {"CEMG": "recbole_cemg.trainer"}


def get_model(model_name: str) -> type:
    """Model class for ``model_name``: CEMG from this plugin, anything else from RecBole."""
    if model_name in _PLUGIN_MODELS:
        return getattr(importlib.import_module(_PLUGIN_MODELS[model_name]), model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError) as error:
        # RecBole's lookup imports its exlib package (lightgbm, xgboost) on the way to "not found".
        known = ", ".join(sorted(_PLUGIN_MODELS))
        raise InputError(
            f"Unknown model '{model_name}': it is neither a recbole_cemg model ({known}) nor a RecBole built-in "
            f"model that can be imported here (e.g. SASRec, GRU4Rec, BERT4Rec; names are case-sensitive). "
            f"RecBole said: {error}"
        ) from error


def get_trainer(model_type, model_name: str) -> type:
    """Trainer class for ``model_name``: the plugin's trainer for its models, RecBole's choice otherwise, the latter
    extended to resume interrupted runs and to evaluate every user once across processes."""
    if model_name in _PLUGIN_TRAINERS:
        return getattr(importlib.import_module(_PLUGIN_TRAINERS[model_name]), f"{model_name}Trainer")
    return with_plugin_training(recbole_get_trainer(model_type, model_name))


@functools.cache
def with_plugin_training(trainer_class: type) -> type:
    """``trainer_class`` with ``ResumableTraining``, ``DistributedEvaluation``, ``PerUserRecording`` and
    ``HistoryMasking`` mixed in (RecBole ``Trainer``s)."""
    if not issubclass(trainer_class, Trainer):
        return trainer_class
    from recbole_cemg.distributed import DistributedEvaluation
    from recbole_cemg.evaluation import HistoryMasking, PerUserRecording
    from recbole_cemg.resume import ResumableTraining

    return type(trainer_class.__name__,
                (ResumableTraining, DistributedEvaluation, PerUserRecording, HistoryMasking, trainer_class),
                {"__doc__": trainer_class.__doc__, "__module__": __name__})
