"""More than one process: RecBole's data-parallel engine, on GPUs (nccl) and on CPUs (gloo), counting every user once.

RecBole configures multi-process training with ``nproc``, ``world_size``, ``ip``, ``port`` and ``offset`` and wraps
the model in ``DistributedDataParallel``; it assumes CUDA and nccl. ``join_cpu_process_group`` adds the CPU case.

For evaluation RecBole shards the users with ``DistributedSampler``, which pads the shards to equal length by
repeating users, then averages per-process metrics, so a few users count twice. ``DistributedEvaluation`` gathers
the per-user ranking rows of all processes instead, drops the padding, and computes the metrics of exactly the users
one process would see, on every process (so every process takes the same early-stopping decision).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from recbole.evaluator import Collector

from recbole_cemg.checkpoints import unique_checkpoint_path

# Collector entries with one row per evaluated user (in sampler order); the rest are data-set wide.
PER_USER_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def is_main_process(config) -> bool:
    """Only the first process writes files (checkpoints, codes, results)."""
    return config["single_spec"] or config["local_rank"] == 0


def uses_gpu(config_dict: dict[str, Any]) -> bool:
    return torch.cuda.is_available() and config_dict.get("use_gpu", True) and str(config_dict.get("gpu_id", "")) != ""


def join_cpu_process_group(config_dict: dict[str, Any]) -> None:
    """RecBole's multi-process set-up for CPU processes: the gloo backend, and the CPU as device."""
    rank = config_dict["local_rank"] + (config_dict.get("offset") or 0)
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=config_dict["world_size"],
                                init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}")
    config_dict.update(device=torch.device("cpu"), single_spec=False)
    if config_dict["local_rank"] != 0:  # as RecBole does: only the first process logs and shows progress
        config_dict.update(state="error", show_progress=False, verbose=False)


def barrier(config) -> None:
    if not config["single_spec"]:
        dist.barrier()


def broadcast_object(value: Any, config) -> Any:
    """The first process's ``value``, on every process."""
    if config["single_spec"]:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def collective_device() -> torch.device:
    """Where tensors must be for collectives: the GPU for nccl, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(values: list[float], op: dist.ReduceOp = dist.ReduceOp.SUM) -> list[float]:
    """``values`` combined over all processes (sum by default)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def gather_rows(rows: torch.Tensor, total: int) -> torch.Tensor:
    """Undo ``DistributedSampler(shuffle=False)``: process ``r`` holds rows ``r, r + world, ...`` of ``total`` rows,
    padded with repeats to ``ceil(total / world)`` rows. Returns the ``total`` rows in their original order."""
    world = dist.get_world_size()
    per_process = math.ceil(total / world)
    if len(rows) != per_process:
        raise RuntimeError(f"distributed evaluation: this process holds {len(rows)} rows, expected {per_process} "
                           f"({total} rows over {world} processes); only one row per evaluated user is supported.")
    local = rows.to(collective_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return torch.stack(parts, 1).reshape(world * per_process, *rows.shape[1:])[:total].to(rows.device)


class GatheringCollector(Collector):
    """RecBole's ``Collector`` whose per-user rows are gathered from every process; ``rows``: users evaluated."""

    rows = 0

    def get_data_struct(self):
        struct = super().get_data_struct()
        for key in PER_USER_KEYS:
            if key in struct:
                struct._data_dict[key] = gather_rows(struct[key], self.rows)
        return struct


class DistributedEvaluation:
    """Mixin for a RecBole ``Trainer``: one checkpoint path for all processes (unique to the run: RecBole's name,
    to the second, plus the suffix that the first process drew), and evaluation over gathered rows."""

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.saved_model_file = broadcast_object(unique_checkpoint_path(self.saved_model_file), config)
        if not config["single_spec"]:
            self.eval_collector = GatheringCollector(config)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not self.config["single_spec"] and eval_data:
            if load_best_model:
                barrier(self.config)  # the first process may still be writing the best checkpoint
            self.eval_collector.rows = len(eval_data.sampler.dataset)
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)

    def _map_reduce(self, result, num_sample):
        return result  # already computed over the gathered rows of all users, identically on every process


def wrap_model(model: torch.nn.Module, config) -> torch.nn.parallel.DistributedDataParallel:
    """A fresh DDP wrapper, for after a stage changed which parameters train. Wrapping also copies the first
    process's parameters and buffers to all processes."""
    device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
