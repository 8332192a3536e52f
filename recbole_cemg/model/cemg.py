"""CEMG: collaborative-enhanced multimodal generative recommendation, as a RecBole sequential model.

Each item becomes a short tuple of discrete codes (``ItemTokenizer``: collaborative-guided fusion of the item's
modalities + RQ-VAE + de-duplication level); a generator built on a causal LM learns the next item's code tuple
from the history's items and scores every item by it (``next_item.NextItemGenerator``: the item-level generator
scores every item exactly, the token-level one by trie-constrained beam search).

The stages that precede generator training (collaborative embeddings, tokenizer) are run by ``CEMGTrainer``; this
class holds their results (``collab_embeddings``, ``item_codes``) and implements RecBole's model contract.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_cemg.checkpoints import check_origin, run_identity
from recbole_cemg.data.features import load_modalities
from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.evaluation import training_item_counts
from recbole_cemg.io import atomic_write
from recbole_cemg.model.collab_view import CollaborativeView
from recbole_cemg.model.collaborative import build_collaborative_model, collaborative_dim
from recbole_cemg.model.decoding import DecodingStats
from recbole_cemg.model.generator import CodeGenerator
from recbole_cemg.model.item_generator import ItemLevelGenerator
from recbole_cemg.model.next_item import ItemSequence, NextItemGenerator
from recbole_cemg.model.tokenizer import (ItemTokenizer, TokenizerInputs, TokenizerReport, TokenizerViews, code_usage,
                                          deduplicate, unique_rows)
from recbole_cemg.schema import check_config

# The generators ``generator_input`` selects; each owns its loss and its scores of every item.
GENERATORS: dict[str, type[NextItemGenerator]] = {"items": ItemLevelGenerator, "tokens": CodeGenerator}


class CEMG(SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        check_config(config, "CEMG")
        self.config = config
        self.item_tokens = list(dataset.field2id_token[self.ITEM_ID])
        kept = config["view_levels"] or config["codebook_levels"]
        collab_levels = (config["collab_view_levels"] or kept) * config["collab_view"]
        collab_size = config["collab_view_size"] or config["codebook_size"]
        self.level_sizes = ([config["codebook_size"]] * kept * config["tokenizer_views"]
                            + [collab_size] * collab_levels + [config["dedup_size"]])

        self.content = load_modalities(config, dataset, config["modalities"] or [])
        collab_dim = collaborative_dim(config, self.n_items)
        names = [f.name for f in self.content] + (["collab"] if config["collab_in_fusion"] else [])
        dims = [f.values.shape[1] for f in self.content] + ([collab_dim] if config["collab_in_fusion"] else [])
        views = [ItemTokenizer(
            names, dims, collab_dim, config["fusion_dim"], list(config["rqvae_hidden_dims"]),
            config["rqvae_latent_dim"], config["codebook_levels"], config["codebook_size"], config["fusion"],
            config["fusion_guidance"], config["rqvae_beta"], config["align_weight"], config["align_temperature"],
            config["rqvae_dropout"], config["fusion_popularity"], config["quantizer"])
            for _ in range(config["tokenizer_views"])]
        if config["collab_view"]:
            views.append(CollaborativeView(collab_dim, collab_levels, collab_size))
        single = len(views) == 1 and kept == config["codebook_levels"]  # the plain tokenizer: earlier checkpoints load
        self.tokenizer = views[0] if single else TokenizerViews(
            views, [kept] * config["tokenizer_views"] + [collab_levels] * config["collab_view"])
        self.joint_weight = float(config["joint_weight"])
        self.training_counts = training_item_counts(dataset)  # the counts of the popularity buckets
        self.warm_items = self.training_counts > 0
        self.generator = GENERATORS[config["generator_input"]].from_config(config, self.level_sizes, collab_dim,
                                                                           self.training_counts)
        # The stage-1 model itself, kept for score fusion (its next-item log-probability added to CEMG's with a
        # weight chosen on the validation split, CEMGTrainer.score_fusion) and as the teacher of distillation
        # (distill_weight); CEMG's own ranking stays the pure generative one. Fixed: always in eval mode.
        needed = any(config["score_fusion_weights"]) or config["distill_weight"]
        self.collab_model = build_collaborative_model(config, dataset) if needed else None

        self.register_buffer("collab_embeddings", torch.zeros(self.n_items, collab_dim))
        self.register_buffer("item_codes", torch.zeros(self.n_items, len(self.level_sizes), dtype=torch.long))
        # Cold-target simulation: each item's code tuple as its content alone places it (set with the codes).
        self.register_buffer("content_codes", None, persistent=False)
        # Every item's collaborative embedding as predicted from its content (out of fold for the warm items), the
        # tokenizer's input for simulated cold items (cold_simulation, cold_target_simulation); set with the
        # collaborative embeddings.
        self.content_collab: torch.Tensor | None = None
        self.device_tokenizer_inputs: TokenizerInputs | None = None
        self.tokenizer_report: TokenizerReport | None = None

    @property
    def decoding_stats(self) -> DecodingStats:
        return self.generator.decoding_stats

    # ------------------------------------------------------------------------------------------ item codes
    def tokenizer_inputs(self, as_cold: bool = False) -> TokenizerInputs:
        """What the tokenizer reads of every item; ``as_cold``: each item as a cold-start item would look, with its
        collaborative embedding predicted from its content (``content_collab``) and no training interactions."""
        collab = self.content_collab if as_cold else self.collab_embeddings.cpu()
        features = [f.values for f in self.content]
        masks = [f.mask for f in self.content]
        if self.config["collab_in_fusion"]:
            features.append(collab)
            masks.append(torch.arange(self.n_items) > 0)
        popularity = None
        if self.config["fusion_popularity"]:
            popularity = torch.zeros_like(self.training_counts) if as_cold else self.training_counts
        return TokenizerInputs(features, masks, collab, popularity)

    def fit_tokenizer(self, show_progress: bool = True) -> TokenizerReport:
        """Train fusion + RQ-VAE on every item, then fix each item's unique code tuple."""
        config = self.config
        device = self.collab_embeddings.device
        inputs = self.tokenizer_inputs().to(device)
        cold_view = self.tokenizer_inputs(as_cold=True).to(device) if self.content_collab is not None else None
        items = torch.arange(1, self.n_items, device=device)
        seed = torch.Generator(device=device).manual_seed(config["seed"])
        epochs = self.tokenizer.fit(inputs, items, config["tokenizer_epochs"], config["tokenizer_learning_rate"],
                                    config["tokenizer_batch_size"], config["tokenizer_eval_step"],
                                    config["tokenizer_stopping_step"], show_progress=show_progress, generator=seed,
                                    cold_view=cold_view, cold_simulation=config["cold_simulation"])
        encoded, codes = self.encode_items(inputs)
        if config["cold_target_simulation"]:
            content = self.tokenizer.encode(cold_view.rows(items))["codes"]
            self.content_codes = torch.cat([torch.cat([codes[:1, :-1], content]), codes[:, -1:]], dim=1)
        self.set_codes(codes)
        weights = encoded["weights"].mean(0).tolist()
        self.tokenizer_report = make_report(encoded["codes"], codes[1:], self.level_sizes, encoded["reconstruction"],
                                            epochs, dict(zip(self.tokenizer.modality_names, weights)))
        return self.tokenizer_report

    def encode_items(self, inputs: TokenizerInputs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Encode every item with the tokenizer as it is now: the encoder's output, and the unique code table
        ``[items, levels]`` after de-duplication, row 0 for the padding item."""
        items = torch.arange(1, self.n_items, device=inputs.collab.device)
        encoded = self.tokenizer.encode(inputs.rows(items))
        codes = deduplicate(encoded["codes"], encoded["residual"], self.config["dedup_size"])
        return encoded, torch.cat([torch.zeros_like(codes[:1]), codes])

    def set_codes(self, codes: torch.Tensor) -> None:
        """Install the code table ``[items, levels]`` (row 0: padding item) and build the decoding trie. The codes
        are final from here on, so the tokenizer is frozen (the generator's optimizer must not touch it), unless
        joint training goes on shaping it (``joint_weight``; ``recode`` then refreshes the codes)."""
        self.tokenizer.requires_grad_(bool(self.joint_weight))
        self.item_codes.copy_(codes.to(self.item_codes.device))
        self.generator.set_items(self.item_codes, self.collab_embeddings, self.content_codes,
                                 self.tokenizer.decode)

    def recode(self) -> float:
        """Joint training: re-encode every item with the tokenizer as trained so far and install the new unique
        codes (ETEGRec's alternation); returns the share of items whose code tuple changed."""
        _, codes = self.encode_items(self.tokenizer_inputs().to(self.item_codes.device))
        changed = float((codes != self.item_codes).any(1)[1:].float().mean())
        self.set_codes(codes)
        return changed

    def save_codes(self, path: str) -> None:
        """Write ``{item token: [codes]}`` (readable JSON) and the tokenizer's diagnostics atomically;
        ``tokenizer_path`` loads it back."""
        table = {"run": run_identity(self.config), "level_sizes": self.level_sizes,
                 "report": asdict(self.tokenizer_report) if self.tokenizer_report else None,
                 "codes": self.token_table(self.item_codes)}
        if self.content_codes is not None:
            table["content_codes"] = self.token_table(self.content_codes)
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=0)

    def token_table(self, codes: torch.Tensor) -> dict[str, list[int]]:
        """``{item token: codes}`` of a code table ``[items, levels]``, as the codes file stores it."""
        return {self.item_tokens[i]: codes[i].tolist() for i in range(1, self.n_items)}

    def load_codes(self, path: str) -> None:
        """Read a codes file written by ``save_codes`` and check it matches this dataset and configuration."""
        table = read_codes_file(path)
        check_origin(table.get("run") or {}, self.config, path, "tokenizer_path")
        if table.get("level_sizes") != self.level_sizes:
            raise InputError(f"{path}: written for code levels {table.get('level_sizes')}, but this run has "
                             f"{self.level_sizes} (view_levels, or else codebook_levels, times tokenizer_views; "
                             "collab_view_levels, collab_view_size; codebook_size; dedup_size).")
        if self.config["cold_target_simulation"]:
            if "content_codes" not in table:
                raise InputError(f"{path}: no content-only codes, which cold_target_simulation needs (the file was "
                                 "written by a run without it). Leave tokenizer_path empty to fit the tokenizer anew, "
                                 "or set cold_target_simulation: 0.")
            self.content_codes = self.code_table(table["content_codes"], path).to(self.item_codes.device)
        self.set_codes(self.code_table(table["codes"], path))
        if table.get("report"):
            self.tokenizer_report = TokenizerReport(**table["report"])

    def code_table(self, stored: dict[str, list[int]], path: str) -> torch.Tensor:
        """The ``[items, levels]`` tensor of a ``{item token: codes}`` table read from ``path``, checked."""
        missing = [t for t in self.item_tokens[1:] if t not in stored]
        if missing or len(stored) != self.n_items - 1:
            raise InputError(f"{path}: its {len(stored)} items do not match the dataset's {self.n_items - 1} "
                             f"(e.g. missing '{missing[0] if missing else '-'}'). Was it written for another dataset "
                             "or another filtering?")
        codes = torch.tensor([[0] * len(self.level_sizes)] + [stored[t] for t in self.item_tokens[1:]])
        if (codes >= torch.tensor(self.level_sizes)).any() or (codes < 0).any():
            raise InputError(f"{path}: codes outside the code levels {self.level_sizes}.")
        return codes

    # ------------------------------------------------------------------------------------------ RecBole contract
    def sequence(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[ItemSequence, torch.Tensor | float]:
        """What the generator reads of right-padded item sequences, and with joint training the tokenizer's loss
        on their items (else 0)."""
        latent, tokenizer_loss = None, 0.0
        if self.joint_weight:  # straight-through latent: the generator's loss reaches the RQ-VAE and the fusion
            unique, inverse = torch.unique(items, return_inverse=True)  # sorted: the padding item 0 comes first
            if self.device_tokenizer_inputs is None:
                self.device_tokenizer_inputs = self.tokenizer_inputs().to(items.device)
            padding = int(unique[0] == 0)  # it has no features: kept out of the tokenizer and its in-batch loss
            out = self.tokenizer(self.device_tokenizer_inputs.rows(unique[padding:]))
            quantised = torch.cat([out["quantised"].new_zeros(padding, out["quantised"].shape[1]), out["quantised"]])
            latent, tokenizer_loss = quantised[inverse], out["loss"]
        sequence = ItemSequence(items, lengths, self.item_codes[items], self.collab_embeddings[items], latent)
        return sequence, tokenizer_loss

    def history(self, interaction) -> ItemSequence:
        return self.sequence(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])[0]

    def train(self, mode: bool = True) -> CEMG:
        super().train(mode)
        if self.collab_model is not None:  # a fixed model: no dropout when it teaches or fuses
            self.collab_model.eval()
        return self

    @torch.no_grad()
    def teacher_log_probs(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The collaborative model's log-probability of every item following each history (the first ``lengths[n]``
        items of row n): RecBole's own ``full_sort_predict`` on the history alone, one call per history length, so
        any RecBole sequential model can teach and none sees what follows the history."""
        logits = torch.empty(len(items), self.n_items, device=items.device)
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length)[:, 0]
            history = Interaction({self.ITEM_SEQ: items[rows, :length], self.ITEM_SEQ_LEN: lengths[rows]})
            logits[rows] = self.collab_model.full_sort_predict(history).float()[:, : self.n_items]
        logits[:, 0] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Next-item loss on the window ``history + target``: at its last position, or with ``train_all_positions``
        at every position (SASRec-style: one pass trains every prefix)."""
        history, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        window = torch.cat([history, torch.zeros_like(history[:, :1])], dim=1)
        window[torch.arange(len(lengths), device=lengths.device), lengths] = interaction[self.POS_ITEM_ID]
        sequence, tokenizer_loss = self.sequence(window, lengths + 1)
        teacher = self.teacher_log_probs if self.config["distill_weight"] else None
        return (self.generator.loss(sequence, self.config["train_all_positions"], teacher)
                + self.joint_weight * tokenizer_loss)

    def predict(self, interaction) -> torch.Tensor:
        return self.generator.item_scores(self.history(interaction), interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.generator.all_item_scores(self.history(interaction))

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen weights of a pretrained LLM: the generator's trainable parameters, the
        tokenizer (small), the collaborative embeddings and the code table."""
        trainable = {f"generator.{n}" for n in self.generator.trainable_state_names()}
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("generator.") or k in trainable or not self.config["llm_path"]}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        expected_missing = set(self.state_dict()) - set(self.checkpoint_state())
        if unexpected or set(missing) - expected_missing:
            raise InputError(f"Checkpoint does not fit this model: missing {sorted(set(missing) - expected_missing)[:5]}"
                             f", unexpected {unexpected[:5]}. Was it written with another configuration?")
        self.set_codes(self.item_codes)


def make_report(raw_codes: torch.Tensor, codes: torch.Tensor, level_sizes: list[int], reconstruction: float,
                epochs: int, modality_weights: dict[str, float]) -> TokenizerReport:
    items = len(codes)
    unique = unique_rows(raw_codes)
    usage, entropy, used = code_usage(codes, level_sizes)
    largest = int(torch.unique(raw_codes, dim=0, return_counts=True)[1].max())
    return TokenizerReport(items=items, unique_before_dedup=unique, collisions=items - unique,
                           collision_rate=(items - unique) / items, max_items_per_tuple=largest,
                           unique_after_dedup=unique_rows(codes), reconstruction_error=reconstruction,
                           usage=usage, entropy_bits=entropy, used_codes=used, epochs=epochs,
                           modality_weights=modality_weights)


def read_codes_file(path: str, reader: str = "`tokenizer_path`",
                    otherwise: str = ", or leave tokenizer_path empty to fit the tokenizer anew") -> dict:
    """The table of a ``.codes.json`` file (read by ``reader``; ``otherwise``: what else a user can do than point it
    at a complete file); a missing, truncated or foreign file is named."""
    what = f"{reader} needs the .codes.json file written by an earlier run"
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file; {what}.") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}; truncated?); {what}. Point it at a "
                         f"complete one{otherwise}.") from None
    if not isinstance(table, dict) or not isinstance(table.get("codes"), dict):
        raise InputError(f"{path}: no 'codes' table; {what}.")
    return table
