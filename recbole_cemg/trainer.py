"""CEMGTrainer: runs CEMG's stages in order, then trains the generator with RecBole's own training loop.

1. collaborative item embeddings (a RecBole model trained on the training split, or a file);
2. + 3. the item tokenizer (collaborative-guided fusion + RQ-VAE), giving every item a unique code tuple
   (or the codes of an earlier run on the same data, ``tokenizer_path``; stage 1 still gives the generator its
   collaborative input and score fusion its trained model);
4. the generator, epoch by epoch with RecBole's early stopping on the valid metric, where evaluation is CEMG's
   trie-constrained beam search; with ``weight_average``, validated and saved with a running average of its weights.

Checkpoints hold only what training changes plus the code table, and reload with ``weights_only=True``. With
``resume`` set to an interrupted run's checkpoint, finished stages are read back from their files (``.collab.npz``,
``.codes.json``), an interrupted collaborative model or generator continues from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from typing import Iterator

import torch
from recbole.trainer import Trainer
from torch import nn
from recbole.utils import set_color

from recbole_cemg.checkpoints import FINGERPRINT_KEY, check_origin, read_checkpoint, run_identity
from recbole_cemg.data.features import align_item_features, load_item_features, resolve_path, save_item_features
from recbole_cemg.data.windows import windowed_train_data
from recbole_cemg.distributed import DistributedEvaluation, barrier, is_main_process, wrap_model
from recbole_cemg.evaluation import HistoryMasking, PerUserRecording
from recbole_cemg.io import atomic_directory, atomic_write
from recbole_cemg.model.collaborative import (content_regression, load_checkpoint_embeddings, map_cold_items,
                                              source_kind, train_collaborative_model)
from recbole_cemg.plots import plot_code_usage
from recbole_cemg.resume import ResumableTraining
from recbole_cemg.score_fusion import ScoreEnsemble, fuse_on_valid_and_test
from recbole_cemg.weight_average import WeightAverage


class CEMGTrainer(ResumableTraining, DistributedEvaluation, PerUserRecording, HistoryMasking, Trainer):
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.logger.info(set_color(f"CEMG stage: {name}", "yellow"))
        with self.timed(name):
            yield
        self.logger.info(set_color(f"CEMG stage {name} done in {self.run_seconds()[name]:.1f}s", "yellow")
                         + (" (all segments of the resumed run)" if self.resuming else ""))

    def artifact(self, suffix: str) -> str:
        """Path of a file that belongs to this run's checkpoint (codes, plots, embeddings)."""
        return os.path.splitext(self.saved_model_file)[0] + suffix

    def finished_stage(self, suffix: str) -> str | None:
        """When resuming, the file a stage of the interrupted run left behind, if it got that far."""
        path = self.artifact(suffix)
        return path if self.resuming and os.path.isfile(path) else None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model = self.model
        finished = self.finished_stage(".collab.npz")
        if finished:
            self.read_collaborative(finished)
        else:
            with self.stage("collaborative"):
                self.fit_collaborative(train_data, valid_data, show_progress)
                if saved and is_main_process(self.config):
                    save_item_features(self.artifact(".collab.npz"), model.item_tokens[1:],
                                       model.collab_embeddings[1:].cpu().numpy(),
                                       encoder=f"collab:{self.config['collab_source']}",
                                       fingerprint=self.config[FINGERPRINT_KEY])
        saved_codes = self.config["tokenizer_path"] or self.finished_stage(".codes.json")
        with self.stage("tokenizer"):
            if saved_codes:
                model.load_codes(resolve_path(saved_codes))
                self.logger.info(f"item codes loaded from {saved_codes}")
            else:
                report = model.fit_tokenizer(show_progress)
                self.logger.info(set_color("tokenizer", "blue") + f": {json.dumps(asdict(report))}")
                if saved and is_main_process(self.config):
                    model.save_codes(self.artifact(".codes.json"))
                    plot_code_usage(model.item_codes[1:].cpu(), model.level_sizes, self.artifact(".codes.png"))
                    self.logger.info(f"item codes saved to {self.artifact('.codes.json')}")
        if not self.config["single_spec"]:  # the tokenizer is frozen now; wrapping anew also syncs codes from rank 0
            self.distributed_model = wrap_model(model, self.config)
            model.set_codes(model.item_codes)
        self.optimizer = self._build_optimizer(params=parameter_groups(model, self.config["weight_decay"],
                                                                       self.config["weight_decay_scope"]))
        if self.config["weight_average"]:
            self.weight_average = WeightAverage(model, self.config["weight_average"])
            self.optimizer.register_step_post_hook(lambda *_: self.weight_average.update())
        if self.config["train_all_positions"]:
            train_data = windowed_train_data(self.config, train_data, self.config["train_stride"])
            self.logger.info(f"generator: {len(train_data.dataset)} training windows (stride "
                             f"{self.config['train_stride']}), loss on every position")
        with self.stage("generator"):
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        if self.weight_average is not None:  # what a later evaluate(load_best_model=False) scores is the average too
            self.weight_average.install()
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        with self.scheduled_learning_rate(epoch_idx, len(train_data)):
            loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        step = self.config["joint_recode_step"]
        if self.model.joint_weight and step and (epoch_idx + 1) % step == 0:
            changed = self.model.recode()
            self.logger.info(f"joint training: items re-coded after epoch {epoch_idx}, {changed:.2%} changed codes")
        return loss

    @contextlib.contextmanager
    def scheduled_learning_rate(self, epoch_idx: int, steps: int) -> Iterator[None]:
        """Sets each step's learning rate from ``lr_schedule`` before the optimizer takes it. The rate is a
        function of the step's place in the whole training (``epochs`` x ``steps``), so a resumed run continues on
        the same curve with no scheduler state to save."""
        schedule = self.config["lr_schedule"]
        if schedule == "constant":
            yield
            return
        total, step = self.epochs * steps, epoch_idx * steps

        def set_rate(optimizer, args, kwargs) -> None:
            nonlocal step
            rate = self.learning_rate * learning_rate_factor(schedule, step / total)
            for group in optimizer.param_groups:
                group["lr"] = rate
            step += 1

        handle = self.optimizer.register_step_pre_hook(set_rate)
        try:
            yield
        finally:
            handle.remove()

    def fit_collaborative(self, train_data, valid_data, show_progress: bool) -> None:
        """Stage 1: collaborative embeddings from the training split (``collab_source``: a model trained here, a
        checkpoint or a feature file of this data), cold-start rows mapped from content."""
        model, source = self.model, self.config["collab_source"]
        kind = source_kind(source)
        if kind == "features":
            self.read_collaborative(resolve_path(source))
            return
        if kind == "checkpoint":
            embeddings = load_checkpoint_embeddings(self.config, model.n_items)
        else:
            collab = train_collaborative_model(self.config, train_data, valid_data, show_progress,
                                               self.artifact(".collab.pth"), self.resuming)
            embeddings = collab.item_embedding.weight.detach()[: model.n_items].float().cpu()
            if model.collab_model is not None:
                model.collab_model.load_state_dict(collab.state_dict())
        self.install_collaborative(embeddings, model.warm_items)

    def read_collaborative(self, path: str) -> None:
        """Collaborative embeddings from a feature file: ``collab_source``, or the ``.collab.npz`` an interrupted
        run left (then also its trained collaborative model, for score fusion)."""
        model = self.model
        stored = load_item_features(path)
        if stored.fingerprint:
            check_origin({FINGERPRINT_KEY: stored.fingerprint}, self.config, path, "collab_source")
        token2id = {token: i for i, token in enumerate(model.item_tokens)}
        loaded = align_item_features(stored, token2id, model.n_items, "collab", path,
                                     self.config["feature_unknown_items"])
        trained_here = source_kind(self.config["collab_source"]) == "model"  # else built from its checkpoint
        if model.collab_model is not None and trained_here and path == self.finished_stage(".collab.npz"):
            model.collab_model.load_state_dict(read_checkpoint(self.artifact(".collab.pth"), "resume")["state_dict"])
        self.logger.info(f"collaborative embeddings read from {path}")
        self.install_collaborative(loaded.values, loaded.mask & model.warm_items)

    def install_collaborative(self, embeddings: torch.Tensor, known: torch.Tensor) -> None:
        """The collaborative embeddings, cold-start rows mapped from content, and (cold simulation) every item's
        content prediction, out of fold for the known ones."""
        model = self.model
        embeddings = map_cold_items(embeddings, known.clone(), model.content)
        model.collab_embeddings.copy_(embeddings.to(model.collab_embeddings.device))
        if self.config["cold_simulation"] or self.config["cold_target_simulation"]:
            model.content_collab = content_regression(embeddings, known, model.content, folds=5)

    def averaged_weights(self) -> contextlib.AbstractContextManager:
        """The generator's running average of its weights swapped in (``weight_average``), or nothing changed."""
        return self.weight_average.swapped_in() if self.weight_average is not None else contextlib.nullcontext()

    def _valid_epoch(self, valid_data, show_progress=False):
        with self.averaged_weights():
            return super()._valid_epoch(valid_data, show_progress)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        with self.averaged_weights(), atomic_write(path) as f:
            torch.save({"run": run_identity(self.config), "epoch": epoch, "cur_step": self.cur_step,
                        "best_valid_score": float(self.best_valid_score),
                        "state_dict": self.model.checkpoint_state()}, f)
        if self.config["lora"]:  # the adapter also in peft's own format, loadable with PeftModel.from_pretrained
            with atomic_directory(self.artifact(".adapter")) as folder:
                self.model.generator.model.save_pretrained(folder, save_embedding_layers=False)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def score_fusion(self, valid_data, test_data, item_counts: torch.Tensor) -> dict | None:
        """Score fusion: CEMG's log-probabilities plus each weight of ``score_fusion_weights`` times the
        collaborative model's, the weight chosen on the validation split (0: the pure generative ranker), tested
        with per-user results. Runs on the loaded best model, which stays pure."""
        weights = [float(w) for w in self.config["score_fusion_weights"]]
        if not any(weights):
            return None
        ensemble = ScoreEnsemble(self.model, self.model.collab_model)
        return fuse_on_valid_and_test(self, ensemble, weights, valid_data, test_data, item_counts)

    def collaborative_result(self, valid_data, test_data, item_counts: torch.Tensor) -> dict | None:
        """The collaborative model that stage 1 trained in this run, evaluated on its own: a baseline row with
        exactly the configuration CEMG reads (None when it was read from a file, which has its own row, or is not
        kept, i.e. without score fusion)."""
        collab = self.model.collab_model
        if collab is None or source_kind(self.config["collab_source"]) != "model":
            return None
        result = {"best_valid_result": dict(self.evaluate_model(collab, valid_data)),
                  "checkpoint": self.artifact(".collab.pth"), "parameters": sum(p.numel() for p in collab.parameters())}
        start = time.perf_counter()
        with self.recording_users(test_data, item_counts) as users:
            result["test_result"] = dict(self.evaluate_model(collab, test_data))
        result["seconds"] = {"train": self.run_seconds().get("collaborative", 0.0),
                             "test": round(time.perf_counter() - start, 3)}
        self.logger.info(set_color("collaborative model alone", "yellow") + f": test {result['test_result']}")
        return {**result, "per_user": users[0]}

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            barrier(self.config)  # the first process may still be writing the best checkpoint
            path = model_file or self.saved_model_file
            checkpoint = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_checkpoint_state(checkpoint["state_dict"])
            self.logger.info(f"Loading model parameters from {path}")
        stats = getattr(self.model, "decoding_stats", None)  # None while evaluating a part (evaluate_model)
        if stats is not None:
            stats.reset()
        result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        if stats is not None and not self.config["single_spec"]:
            stats.gather()
        return result


def parameter_groups(model: nn.Module, weight_decay: float, scope: str) -> list[dict]:
    """The trainable parameters as optimizer groups. ``scope: all`` decays every one (RecBole's default);
    ``matrices`` decays only weight matrices, not embeddings, biases or norm gains (the usual transformer recipe):
    decay pulls a rarely seen item's code embedding towards zero between the few steps that update it."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if scope == "all":
        return [{"params": trainable, "weight_decay": weight_decay}]
    exempt = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    exempt |= {id(p) for p in trainable if p.dim() < 2}
    return [{"params": [p for p in trainable if id(p) not in exempt], "weight_decay": weight_decay},
            {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0}]


def learning_rate_factor(schedule: str, progress: float) -> float:
    """The learning rate's share of ``learning_rate`` at ``progress`` (0: the first step, 1: the end of the last
    epoch). ``cosine`` decays it to 0 by the last epoch: the generator is still improving at its 20th epoch, and a
    rate that ends low settles the weights where a constant one keeps moving them step by step."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
