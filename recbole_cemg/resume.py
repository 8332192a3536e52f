"""Resumable training for any RecBole trainer.

RecBole saves only the best model, so a run killed at epoch 40 whose best epoch was 25 would redo 15 epochs and, worse,
continue from the wrong weights. ``ResumableTraining`` writes the complete training state after every evaluated
epoch, and once before the first (weights, optimizer, early-stopping counters, and every random generator that
training draws from), to ``<checkpoint>.resume.pth``, atomically. With ``resume`` set to the interrupted run's
checkpoint path (the run logs it when it starts), ``fit`` restores that state and continues with the next epoch, so
the resumed run reaches the numbers of an uninterrupted one. The seconds it reports add up every segment (each
up to its last saved state), so a resumed run's training time is not just its last segment's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import time
from logging import getLogger
from typing import Any, Iterator

import numpy as np
import torch

from recbole_cemg.checkpoints import check_origin, run_identity
from recbole_cemg.distributed import is_main_process
from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.io import atomic_write


# Files of a run beside its best checkpoint ``<stem>.pth`` (``.collab.resume.pth`` ends like ``.resume.pth``).
OTHER_RUN_FILES = (".resume.pth", ".collab.pth")


def state_path(checkpoint: str) -> str:
    """Where the resumable state of the run whose best model goes to ``checkpoint`` is kept."""
    return os.path.splitext(checkpoint)[0] + ".resume.pth"


def random_state(loader) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "loader": loader.generator.get_state()}
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any], loader) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    loader.generator.set_state(state["loader"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: CEMG leaves out the frozen weights of a pretrained LLM, other models keep all."""
    return model.checkpoint_state() if hasattr(model, "checkpoint_state") else model.state_dict()


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    if hasattr(model, "load_checkpoint_state"):
        model.load_checkpoint_state(state)
    else:
        model.load_state_dict(state)


def interrupted_run(checkpoint: str, config) -> str:
    """``checkpoint``, checked to be the best-checkpoint path of an interrupted run of this model on this data (its
    own ``<stem>.pth``, never one of the run's other files, which resuming would write over)."""
    name = os.path.basename(checkpoint)
    if not name.endswith(".pth") or name.endswith(OTHER_RUN_FILES):
        raise InputError(f"`resume` = {checkpoint!r} is not a run's checkpoint path. Pass the path the interrupted "
                         "run logged at its start ('checkpoint: <checkpoint_dir>/<model>-<time>.pth'), not one of "
                         "its other files.")
    stem = os.path.splitext(checkpoint)[0]
    states = [(path, model) for path, model in ((state_path(checkpoint), config["model"]),
                                                (stem + ".collab.resume.pth", config["collab_source"]))
              if os.path.isfile(path)]
    if not states:
        raise MissingFileError(f"`resume` = {checkpoint!r}: that run left no resume state ({stem}.resume.pth). Pass "
                               "the checkpoint path an interrupted run logged at its start ('checkpoint: ...'); a "
                               "run that stopped before its first epoch has nothing to resume: start it anew.")
    path, model = states[0]
    recorded = torch.load(path, map_location="cpu", weights_only=True).get("run")
    if not recorded:
        raise InputError(f"`resume` = {checkpoint!r}: {path} does not say which run wrote it (an older version of "
                         "the plugin). Start the run anew.")
    if recorded["model"] != model:
        raise InputError(f"`resume` = {checkpoint!r} is a run of {recorded['model']}, this run trains {model}. Give "
                         f"the same --model (and settings) as the interrupted run.")
    check_origin(recorded, config, checkpoint, "resume")
    return checkpoint


class ResumableTraining:
    """Mixin for a RecBole ``Trainer``: save the training state after each evaluated epoch, restore it on ``resume``."""

    resuming = False
    weight_average = None  # a running average of the weights that training keeps (CEMG's ``weight_average``)

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.earlier_seconds: dict[str, float] = {}  # of the segments before a resume, from the state they saved
        self.segment_seconds: dict[str, float] = {}  # of the timed parts this process finished
        self.running_since: dict[str, float] = {}    # of those it is inside

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a part of training (``train``, a CEMG stage) under ``name`` in ``run_seconds``."""
        self.running_since[name] = time.perf_counter()
        try:
            yield
        finally:
            started = self.running_since.pop(name)
            self.segment_seconds[name] = self.segment_seconds.get(name, 0.0) + time.perf_counter() - started

    def run_seconds(self) -> dict[str, float]:
        """Wall seconds of each timed part, summed over this process and the segments of the run before it."""
        now = time.perf_counter()
        names = {*self.earlier_seconds, *self.segment_seconds, *self.running_since}
        return {name: round(self.earlier_seconds.get(name, 0.0) + self.segment_seconds.get(name, 0.0)
                            + (now - self.running_since[name] if name in self.running_since else 0.0), 3)
                for name in names}

    def resume_from(self, checkpoint: str) -> None:
        """Continue the run whose best model goes to ``checkpoint``: ``fit`` restores its last saved state. The
        temporary files of writes the interrupted run did not finish (``io.atomic_write``) are removed."""
        self.saved_model_file, self.resuming = checkpoint, True
        if is_main_process(self.config):
            folder, stem = os.path.split(os.path.splitext(checkpoint)[0])
            for leftover in glob.glob(os.path.join(folder or ".", f".{glob.escape(stem)}.*.tmp")):
                os.remove(leftover)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        path = state_path(self.saved_model_file)
        if self.resuming and os.path.isfile(path):
            if self.restore_training_state(path, train_data):
                return self.best_valid_score, self.best_valid_result
        elif saved and is_main_process(self.config):
            self.save_training_state(path, train_data, self.start_epoch - 1)

        def save_then_call(epoch: int, valid_score: float) -> None:
            if saved and is_main_process(self.config):
                self.save_training_state(path, train_data, epoch)
            if callback_fn:
                callback_fn(epoch, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, save_then_call)

    def save_training_state(self, path: str, train_data, epoch: int) -> None:
        state = {"run": run_identity(self.config), "epoch": epoch, "cur_step": self.cur_step,
                 "best_valid_score": float(self.best_valid_score),
                 "best_valid_result": {k: float(v) for k, v in (self.best_valid_result or {}).items()},
                 "model": model_state(self.model),
                 "optimizer": self.optimizer.state_dict(), "random": random_state(train_data),
                 "weight_average": self.weight_average.state_dict() if self.weight_average is not None else None,
                 "seconds": self.run_seconds(),
                 "finished": self.cur_step > self.stopping_step or epoch + 1 >= self.epochs}
        with atomic_write(path) as f:
            torch.save(state, f)

    def restore_training_state(self, path: str, train_data) -> bool:
        """Load the state saved at the end of the last finished epoch; True if training has nothing left to do under
        this run's settings (a finished run continues when given more ``epochs`` or a longer ``stopping_step``)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        load_model_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.weight_average is not None:
            if state.get("weight_average") is None:
                raise InputError(f"`resume`: {path} was written by a run that kept no average of its weights; resume "
                                 "it with that run's `weight_average` (0), or start this one anew.")
            self.weight_average.load_state_dict(state["weight_average"])
        set_random_state(state["random"], train_data)
        self.start_epoch, self.cur_step = state["epoch"] + 1, state["cur_step"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"] or None
        self.earlier_seconds = state.get("seconds", {})
        stopped_early, done = self.cur_step > self.stopping_step, self.start_epoch >= self.epochs
        getLogger().info(f"resumed from {path}: epoch {state['epoch']} was the last one finished" + (
            " (training had ended by early stopping; a larger --stopping_step continues it)" if stopped_early else
            " (training had ended; a larger --epochs continues it)" if done else
            f", training continues to epoch {self.epochs - 1}"))
        return stopped_early or done

