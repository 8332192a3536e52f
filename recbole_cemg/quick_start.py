"""Run any model (CEMG or a RecBole built-in) on a dataset with RecBole's protocol, without ``recbole.quick_start``
(which imports ray) and without its FLOPs count (a deep copy of the model, costly for an LLM)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from logging import getLogger
from typing import Any

import torch
import yaml
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_cemg.checkpoints import FINGERPRINT_KEY, check_checkpoint_dir, data_fingerprint
from recbole_cemg.config import Config
from recbole_cemg.data.atomic import check_atomic_files
from recbole_cemg.data.cold_start import choose_cold_items, cold_start_summary, held_out_identity, remove_from_training
from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.evaluation import EXTRA_ROWS, training_item_counts
from recbole_cemg.model.collaborative import model_from_checkpoint
from recbole_cemg.resume import interrupted_run
from recbole_cemg.score_fusion import ScoreEnsemble, fuse_on_valid_and_test
from recbole_cemg.utils import get_model, get_trainer


def run_cemg(model: str | None = None, dataset: str | None = None, config_file_list: list[str] | None = None,
             config_dict: dict[str, Any] | None = None, saved: bool = True, verbose: bool = True) -> dict[str, Any]:
    """Train and evaluate ``model`` on ``dataset``; return RecBole's result dict plus run details."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    if not verbose:
        logger.setLevel(logging.ERROR)
    logger.info(sys.argv)
    logger.info(config)

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    check_checkpoint_dir(config["checkpoint_dir"])
    data = prepare_data(config)
    train_data, valid_data, test_data = data.train, data.valid, data.test
    seconds["data"] = round(time.perf_counter() - start, 3)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_instance = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_instance)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_instance)
    if config["resume"]:
        trainer.resume_from(interrupted_run(config["resume"], config))
    logger.info(f"checkpoint: {trainer.saved_model_file} (if interrupted, continue with "
                f"--resume={trainer.saved_model_file})")

    start = time.perf_counter()
    with trainer.timed("train") if hasattr(trainer, "timed") else contextlib.nullcontext():
        best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=verbose, saved=saved,
                                                          show_progress=config["show_progress"] and verbose)
    seconds["train"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    with trainer.recording_users(test_data, data.item_counts) as users:
        test_result = trainer.evaluate(test_data, load_best_model=saved,
                                       show_progress=config["show_progress"] and verbose)
    seconds["test"] = round(time.perf_counter() - start, 3)

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": dict(best_valid_result or {}),
        "test_result": dict(test_result or {}),
        "seconds": {**seconds, **(trainer.run_seconds() if hasattr(trainer, "run_seconds") else {})},
        "parameters": sum(p.numel() for p in model_instance.parameters()),
        "peak_memory": peak_memory(config["device"]),
        "machine": machine_description(config["device"]),
        "versions": package_versions(),
        "seed": config["seed"],
        "config": recorded_config(config),
        "checkpoint": trainer.saved_model_file if saved else None,
        "per_user": users[0],
    }
    report = getattr(model_instance, "tokenizer_report", None)
    if report is not None:
        result["tokenizer"] = asdict(report)
    stats = getattr(model_instance, "decoding_stats", None)
    if stats is not None:
        result["decoding"] = stats.as_dict()
    for key in ("score_fusion", "collaborative_result"):  # CEMG's extra rows: fused ranker, its stage-1 model
        extra = getattr(trainer, key)(valid_data, test_data, data.item_counts) if hasattr(trainer, key) else None
        if extra is not None:
            result[key.removesuffix("_result")] = extra
    add_cold_start(result, data, test_data._dataset)
    return result


def recorded_config(config: Config) -> dict[str, Any]:
    """The run's configuration as its result file records it (the values JSON can hold): what a later merge reads to
    tell the protocol (e.g. ``mask_history``) and to reload the run."""
    return {k: v for k, v in config.final_config_dict.items()
            if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


@dataclass
class PreparedData:
    """RecBole's three data loaders, the cold-start items held out of training (or None), and the training
    interactions per item (for the popularity breakdown of the per-user results)."""

    train: Any
    valid: Any
    test: Any
    cold: torch.Tensor | None
    item_counts: torch.Tensor


def prepare_data(config) -> PreparedData:
    """The data set and its split as every model of a comparison sees it, cold-start items removed from training."""
    logger = getLogger()
    require_dataset(config)
    check_atomic_files(config)
    data = create_dataset(config)
    logger.info(data)
    check_enough_data(config, data)
    train_data, valid_data, test_data = data_preparation(config, data)
    cold = None
    if config["cold_item_ratio"]:
        cold = choose_cold_items(data.item_num, config["cold_item_ratio"], config["seed"])
    counts = training_item_counts(train_data._dataset, cold)
    if cold is not None:
        train_data = remove_from_training(config, train_data, cold)
        logger.info(f"cold start: {int(cold.sum())} items held out of training ({len(train_data.dataset)} rows left)")
    config[FINGERPRINT_KEY] = data_fingerprint(train_data._dataset, cold)  # checked where a file is read back
    return PreparedData(train_data, valid_data, test_data, cold, counts)


def add_cold_start(result: dict[str, Any], data: PreparedData, dataset) -> None:
    """With items held out of training: which ones (count, checksum), and for the run and each of its extra rows
    the metrics of the test users whose target is such an item, of the others, and the share of held-out items in
    the top-10 lists."""
    if data.cold is None:
        return
    metrics = list(result["test_result"])
    identity = held_out_identity(data.cold, dataset)
    for entry in [result] + [result[key] for key in EXTRA_ROWS if isinstance(result.get(key), dict)]:
        users = entry["per_user"]
        users.held_out = data.cold.numpy()[users.targets]
        entry["cold_start"] = {**identity, **cold_start_summary(users, data.cold, metrics)}
    getLogger().info(set_color("cold-start test result", "yellow") + f": {result['cold_start']}")


def run_score_ensemble(model: str, dataset: str, checkpoints: list[str], weights: list[float],
                       config_file_list: list[str] | None = None,
                       config_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """A baseline ensemble: two trained checkpoints (e.g. SASRec of two seeds) fused by CEMG's score-fusion code,
    the weight chosen on the validation split, tested, with per-user results. No training."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    start = time.perf_counter()
    data = prepare_data(config)
    primary, secondary = (model_from_checkpoint(config, data.train._dataset, path).to(config["device"])
                          for path in checkpoints)
    ensemble = ScoreEnsemble(primary, secondary)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, ensemble)
    fusion = fuse_on_valid_and_test(trainer, ensemble, [float(w) for w in weights], data.valid, data.test,
                                    data.item_counts)
    result = {"model": model, "dataset": config["dataset"], "ensemble_of": list(checkpoints),
              "fusion_weight": fusion["weight"], "valid_by_weight": fusion["valid_by_weight"],
              "best_valid_score": fusion["best_valid_result"][config["valid_metric"].lower()],
              "valid_score_bigger": config["valid_metric_bigger"],
              "best_valid_result": fusion["best_valid_result"], "test_result": fusion["test_result"],
              "seconds": {"train": 0.0, "test": round(time.perf_counter() - start, 3)},
              "parameters": sum(p.numel() for p in ensemble.parameters()),
              "machine": machine_description(config["device"]), "versions": package_versions(),
              "seed": config["seed"], "config": recorded_config(config), "per_user": fusion["per_user"]}
    add_cold_start(result, data, data.test._dataset)
    return result


def run(model: str | None = None, dataset: str | None = None, config_file_list: list[str] | None = None,
        config_dict: dict[str, Any] | None = None, saved: bool = True, nproc: int = 1, world_size: int = -1,
        ip: str = "localhost", port: str = "5678", group_offset: int = 0) -> dict[str, Any] | None:
    """``run_cemg`` in one process, or data-parallel in ``nproc`` processes on this machine (RecBole's arguments:
    ``world_size`` processes in all, this machine's first rank ``group_offset``, rendezvous at ``ip:port``).
    Returns the result of the process of rank 0 when it runs on this machine."""
    if nproc == 1 and world_size <= 0:
        return run_cemg(model, dataset, config_file_list, config_dict, saved)
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {}, world_size=world_size if world_size > 0 else nproc, ip=ip, port=port,
                       nproc=nproc, offset=group_offset)
    mp.spawn(_run_process, args=(model, dataset, config_file_list, config_dict, saved, queue), nprocs=nproc,
             join=True)
    return None if queue.empty() else queue.get()


def _run_process(local_rank: int, model, dataset, config_file_list, config_dict, saved, queue) -> None:
    result = run_cemg(model, dataset, config_file_list, dict(config_dict, local_rank=local_rank), saved)
    if local_rank + config_dict["offset"] == 0:
        queue.put(result)
    torch.distributed.destroy_process_group()


def require_dataset(config) -> None:
    """A clear stop for a dataset that is neither on disk nor one RecBole can download."""
    path, name = config["data_path"], config["dataset"]
    if os.path.isdir(path):
        return
    import recbole

    with open(os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml"), encoding="utf-8") as f:
        if name in (yaml.safe_load(f) or {}):
            return  # RecBole downloads it (needs network)
    raise MissingFileError(
        f"Dataset '{name}' not found: there is no folder {path}, and RecBole knows no dataset of that name. Put its "
        f"atomic files there ({name}.inter, optionally {name}.item), or point `data_path` at the folder holding "
        f"{name}/. ml-100k ships with RecBole; dataset_scripts/convert_amazon.py and convert_local.py make others.")


def check_enough_data(config, data) -> None:
    """Stop before training where the data cannot give a meaningful run: leave-one-out needs users with a training,
    a validation and a test item, and a top-k list needs at least k items."""
    counts = data.inter_feat[data.uid_field].value_counts()  # a DataFrame until data_preparation
    longest = int(counts.max()) if len(counts) else 0
    split = (config["eval_args"] or {}).get("split") or {}
    if "LS" in split and longest < 3:
        raise InputError(f"Data set '{config['dataset']}': no user has the 3 interactions the leave-one-out split "
                         f"needs (a training, a validation and a test item; the most any user has is "
                         f"{longest}). Give users longer histories, or relax the filtering.")
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    items = data.item_num - 1
    if max(topk) > items:
        raise InputError(f"config `topk` = {config['topk']!r}: the data set has only {items} items. Use top-k "
                         f"values of at most {items}.")
    if config["model"] == "CEMG" and config["num_beams"] > items:
        raise InputError(f"config `num_beams` = {config['num_beams']}: the data set has only {items} items. Use at "
                         f"most {items} beams.")


def objective_function(config_dict: dict[str, Any] | None = None, config_file_list: list[str] | None = None,
                       saved: bool = True) -> dict[str, Any]:
    """Objective for RecBole's ``HyperTuning``: one quiet training run, scored on the valid metric."""
    result = run_cemg(config_dict=config_dict, config_file_list=config_file_list, saved=saved, verbose=False)
    return {key: result[key] for key in ("model", "best_valid_score", "valid_score_bigger", "best_valid_result",
                                         "test_result")}


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on a GPU, the peak allocated GPU memory (MiB)."""
    memory = {"cpu_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        memory["gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return memory


def machine_description(device: torch.device) -> dict[str, str]:
    machine = {"cpu": _cpu_name(), "platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    return machine


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("recbole", "torch", "transformers", "peft", "numpy", "pandas", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
