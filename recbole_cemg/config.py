"""RecBole ``Config`` that knows the plugin's models and merges the plugin's YAML files."""

from __future__ import annotations

import os
from typing import Any

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_cemg import compat
from recbole_cemg.distributed import join_cpu_process_group, uses_gpu
from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.schema import check_config
from recbole_cemg.shipped import PROPERTIES_DIR, shipped_path
from recbole_cemg.utils import get_model


class Config(RecBoleConfig):
    """RecBole's configurator plus ``properties/`` of this plugin.

    Precedence, lowest first: RecBole's own defaults, ``properties/overall.yaml`` (the evaluation protocol shared by
    every sequential model run through the plugin), ``properties/model/<model>.yaml``,
    ``properties/dataset/<dataset>.yaml``, then the user's config files, ``config_dict`` and command line.
    A dataset file may hold a block named after a model (e.g. ``CEMG: {epochs: 8}``): it applies to that model
    only, so a dataset can carry model-specific settings without changing the baselines' configuration.
    A missing or malformed config file and a value that breaks the schema (``recbole_cemg.schema``) raise a
    ``UserError`` before anything else happens.
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict[str, Any] | None = None,
    ) -> None:
        compat.apply()
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self) -> dict[str, Any]:
        try:
            return super()._load_cmd_line()
        except SyntaxError as error:  # RecBole's word for a flag given twice with two values
            raise InputError(f"command line: {error.msg} Give each --key=value once.") from None

    def compatibility_settings(self) -> None:
        compat.patch_numpy_aliases()
        super().compatibility_settings()

    def _load_config_files(self, file_list: list[str] | None) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for file in file_list or []:
            merged.update(read_config_file(file, self.yaml_loader))
        return merged

    def _set_default_parameters(self) -> None:
        check_config(self.final_config_dict, self.model)
        super()._set_default_parameters()

    def _init_device(self) -> None:
        if "local_rank" in self.final_config_dict and not uses_gpu(self.final_config_dict):
            join_cpu_process_group(self.final_config_dict)  # RecBole's own set-up knows only CUDA + nccl
        else:
            super()._init_device()

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise InputError("`model` must be given as an argument, in a config file, a config dict or --model=NAME.")
        if isinstance(model, str):
            model_name, model_class = model, get_model(model)
        else:
            model_name, model_class = model.__name__, model
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise InputError("`dataset` must be given as an argument, in a config file, a config dict or --dataset=NAME.")
        return model_name, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        files = [os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")]
        if model_class.type == ModelType.SEQUENTIAL:
            files.insert(0, os.path.join(PROPERTIES_DIR, "overall.yaml"))
        dataset_file = os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml")
        for file in files + [dataset_file]:
            if os.path.isfile(file):
                loaded = self._update_internal_config_dict(file) or {}
                if loaded.get("feature_path"):  # e.g. the ml-100k features in assets/, shipped with the plugin
                    self.internal_config_dict["feature_path"] = shipped_path(loaded["feature_path"])
                if file == dataset_file:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
        model_block = self.internal_config_dict.pop(model, None)
        if isinstance(model_block, dict):
            self.internal_config_dict.update(model_block)


def known_keys(model: str | None, dataset: str | None, config_file_list: list[str] | None = None,
               config_dict: dict[str, Any] | None = None) -> set[str]:
    """Every key the merged config of ``model`` holds (RecBole's defaults, the plugin's, the model's and the
    dataset's, the user's files): an override outside it is a typo RecBole would silently keep."""
    return set(Config(model, dataset, config_file_list, config_dict).final_config_dict)


def read_config_file(path: str, loader: type = yaml.FullLoader) -> dict[str, Any]:
    """The ``key: value`` mapping of a user's config file; a missing, unparsable or non-mapping file is named."""
    if not os.path.isfile(path):
        raise MissingFileError(f"config file not found: {path} (working directory {os.getcwd()}). Check the path "
                               "given in --config_files.")
    with open(path, encoding="utf-8") as f:
        try:
            content = yaml.load(f, Loader=loader)
        except yaml.YAMLError as error:
            line = f":{error.problem_mark.line + 1}" if getattr(error, "problem_mark", None) else ""
            problem = getattr(error, "problem", None) or error
            raise InputError(f"{path}{line}: not valid YAML ({problem}). Fix the file; a config file holds "
                             "`key: value` lines.") from error
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected `key: value` lines, found {type(content).__name__}. Fix the file.")
    return content
