"""Collaborative item embeddings: learned from the training split by a RecBole model, or read from a file.

Items that never occur in the training split (cold start) have no learned embedding. A ridge regression from their
content features to the collaborative space, fitted on the warm items, gives them one, so that their codes still
land near the co-consumed items they resemble.
"""

from __future__ import annotations

import copy
import os
from logging import getLogger

import recbole
import torch
import yaml

from recbole_cemg.checkpoints import check_origin, read_checkpoint, recorded_config
from recbole_cemg.data.features import AlignedFeatures
from recbole_cemg.errors import InputError


def source_kind(source: str) -> str:
    """``collab_source`` is a feature file (``.npz``, rows by item token), a RecBole checkpoint of a model trained on
    the same dataset (``.pth``, rows by internal id), or the name of a RecBole model to train in this run."""
    if source.endswith(".npz"):
        return "features"
    from recbole_cemg.data.features import resolve_path

    if source.endswith(".pth") or os.path.isdir(resolve_path(source)):  # a folder: read_checkpoint names it
        return "checkpoint"
    return "model"


def collab_checkpoint(config, n_items: int, path: str | None = None) -> dict:
    """A RecBole checkpoint (``collab_source`` unless ``path`` is given; a run of this plugin or of RecBole), read
    without running code from it and checked to come from this run's data (``recbole_cemg.checkpoints.check_origin``)."""
    from recbole_cemg.data.features import resolve_path

    key = "collab_source" if path is None else "checkpoint"
    path = resolve_path(path or config["collab_source"])
    checkpoint = read_checkpoint(path, key)
    table = (checkpoint.get("state_dict") or {}).get("item_embedding.weight")
    if not isinstance(table, torch.Tensor):
        raise InputError(f"`{key}` {path}: the checkpoint has no item_embedding table. Give the checkpoint "
                         "of a RecBole sequential model such as SASRec (its best .pth).")
    recorded = checkpoint.get("run") or recorded_config(checkpoint.get("config"))
    check_origin(recorded, config, path, key, rows=table.shape[0], n_items=n_items)
    return checkpoint


def load_checkpoint_embeddings(config, n_items: int) -> torch.Tensor:
    """The ``item_embedding`` table of the checkpoint ``collab_source``, one row per item of this data set."""
    return collab_checkpoint(config, n_items)["state_dict"]["item_embedding.weight"].float()[:n_items]


def collaborative_config(config):
    """The run's config re-targeted at the collaborative model (``collab_source``), with its RecBole defaults,
    ``collab_config`` overrides, and the ``collab_*`` training settings."""
    name = config["collab_source"]
    sub = copy.copy(config)
    sub.final_config_dict = dict(config.final_config_dict)
    defaults_file = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{name}.yaml")
    if os.path.isfile(defaults_file):
        with open(defaults_file, encoding="utf-8") as f:
            sub.final_config_dict.update(yaml.load(f, Loader=config.yaml_loader) or {})
    sub.final_config_dict.update(config["collab_config"] or {})
    sub.final_config_dict.update({
        "model": name,
        "loss_type": "CE",
        "epochs": config["collab_epochs"],
        "learning_rate": config["collab_learning_rate"],
        "train_batch_size": config["collab_batch_size"],
        "stopping_step": config["collab_stopping_step"],
        "weight_decay": 0.0,
        "learner": "adam",
    })
    from recbole_cemg.utils import get_model

    sub.model, sub.model_class = name, get_model(name)
    return sub


def collaborative_dim(config, n_items: int) -> int:
    """Width of the collaborative embeddings, known before they are trained."""
    source = config["collab_source"]
    kind = source_kind(source)
    if kind == "features":
        from recbole_cemg.data.features import load_item_features, resolve_path

        return int(load_item_features(resolve_path(source)).features.shape[1])
    if kind == "checkpoint":
        return int(load_checkpoint_embeddings(config, n_items).shape[1])
    sub = collaborative_config(config)
    dim = sub["hidden_size"] or sub["embedding_size"]
    if not dim:
        raise InputError(f"`collab_source` {source}: cannot tell its embedding width; set collab_config.hidden_size.")
    return int(dim)


def build_collaborative_model(config, dataset) -> torch.nn.Module | None:
    """The collaborative model itself, frozen, for score fusion and distillation: ``collab_source``'s architecture
    (trained in stage 1, which copies its weights in) or the model of a RecBole checkpoint with its weights; None for
    a feature file."""
    from recbole_cemg.utils import get_model

    source = config["collab_source"]
    kind = source_kind(source)
    if kind == "features":
        return None
    if kind == "model":
        sub = collaborative_config(config)
        return get_model(sub["model"])(sub, dataset).requires_grad_(False)
    return model_from_checkpoint(config, dataset)


def model_from_checkpoint(config, dataset, path: str | None = None) -> torch.nn.Module:
    """A frozen RecBole model rebuilt from a checkpoint (``collab_source`` unless ``path`` is given): its
    architecture (the recorded hyper-parameters over this run's config) and weights, checked to come from this
    run's data."""
    from recbole_cemg.utils import get_model

    checkpoint = collab_checkpoint(config, dataset.item_num, path)
    sub = copy.copy(config)
    sub.final_config_dict = {**config.final_config_dict, **recorded_config(checkpoint.get("config")),
                             "device": config["device"]}
    model = get_model(sub["model"])(sub, dataset)
    model.load_state_dict(checkpoint["state_dict"])
    return model.requires_grad_(False)


def train_collaborative_model(config, train_data, valid_data, show_progress: bool, checkpoint_file: str,
                              resume: bool = False) -> torch.nn.Module:
    """Train ``collab_source`` on the training split (early stopping on the valid metric, best model saved to
    ``checkpoint_file``; continued from its last epoch when the run resumes) and return the best model."""
    from recbole.utils import init_seed

    from recbole_cemg.distributed import barrier
    from recbole_cemg.utils import get_model, get_trainer

    sub = collaborative_config(config)
    init_seed(sub["seed"], sub["reproducibility"])
    model = get_model(sub["model"])(sub, train_data._dataset).to(sub["device"])
    if not hasattr(model, "item_embedding"):
        raise InputError(f"`collab_source` {sub['model']} has no `item_embedding` table; use a sequential model "
                         "such as SASRec, GRU4Rec or BERT4Rec, or a file of item embeddings (.npz).")
    trainer = get_trainer(model.type, sub["model"])(sub, model)
    trainer.saved_model_file, trainer.resuming = checkpoint_file, resume
    trainer.fit(train_data, valid_data, verbose=True, saved=True, show_progress=show_progress)
    barrier(sub)  # the first process writes the best model
    model.load_state_dict(read_checkpoint(trainer.saved_model_file, "collab_source")["state_dict"])
    return model


def content_regression(embeddings: torch.Tensor, known: torch.Tensor, content: list[AlignedFeatures],
                       ridge: float = 1.0, folds: int = 0) -> torch.Tensor:
    """Every row's embedding predicted from its content by a ridge regression fitted on the ``known`` rows. With
    ``folds`` > 1 each known row is predicted by a fit that left it out (``folds`` contiguous parts), so it is as far
    from its own embedding as an unseen item's prediction is from the embedding it would have had."""
    design = torch.cat([torch.cat([f.values * f.mask.unsqueeze(1), f.mask.float().unsqueeze(1)], 1) for f in content]
                       + [torch.ones(len(embeddings), 1)], dim=1)

    def fit(rows: torch.Tensor) -> torch.Tensor:
        x, y = design[rows], embeddings[rows]
        return torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y)

    predicted = design @ fit(known)
    if folds > 1:
        for part in torch.nonzero(known).flatten().tensor_split(folds):
            held = torch.zeros_like(known)
            held[part] = True
            predicted[part] = design[part] @ fit(known & ~held)
    return predicted


def map_cold_items(embeddings: torch.Tensor, warm: torch.Tensor, content: list[AlignedFeatures],
                   ridge: float = 1.0) -> torch.Tensor:
    """Replace the rows of cold items (``~warm``) by a ridge regression from their content to the warm rows."""
    cold = ~warm
    cold[0] = False
    if not cold.any():
        return embeddings
    result = embeddings.clone()
    if not content:
        getLogger().warning(f"{int(cold.sum())} cold-start item(s) and no content modality: they get the mean "
                            "collaborative embedding.")
        result[cold] = embeddings[warm].mean(0)
        return result
    result[cold] = content_regression(embeddings, warm, content, ridge)[cold]
    getLogger().info(f"collaborative: {int(cold.sum())} cold-start item(s) mapped from content by ridge regression "
                     f"fitted on {int(warm.sum())} warm items")
    return result
