"""Item-level generator: one position per history item, one head per code level, every item scored exactly.

The token-level generator (``generator.py``) reads L code tokens per history item and writes the next item's codes
token by token, so ranking needs a beam search in which a wrong first code loses the rest. Here each history item is
one input vector (the sum of its code embeddings plus its projected collaborative embedding), a Hugging Face
transformer backbone (built from a config, or pretrained + LoRA) reads the sequence, and head ``l`` turns the state
into logits over the codes of level ``l``. An item's score is the sum of its codes' logits: a gather from one
``[levels, codes]`` table per user, so every item is ranked exactly, without beams (as in RPG).

Three likelihoods of the next item's code tuple share that one scoring function (``code_loss``):

- ``levels``: each level is a softmax over its K codes, ``log P(c) = sum_l log p_l(c_l)`` (RPG's parallel heads);
- ``items``: the summed logits normalised over the code tuples that exist, i.e. maximum likelihood of the next
  item's tuple among the valid ones;
- ``views``: ``items`` once per tokenizer view (a product of experts): each view's share of the tuple (``view_levels``
  levels; the last view's share also holds the de-duplication level) is normalised over the items on its own and
  trained on its own NLL, and an item's score is the sum of its views' log-probabilities. Under ``items`` the views'
  codes are fitted together, so one view can carry the ranking and the other adjust it; under ``views`` each view must
  rank on its own, as each run of an ensemble of differently tokenized runs does (the one lever that lifted the rare
  targets too).

All three rank a user's items by the same sum of code logits (up to a constant per user); they differ in what
training pushes down. Under ``items``
an item that never occurs in training is a negative of every training step and never a target, so its tuple is only
ever pushed down; ``loss_candidates`` (the items the training softmax normalises over, e.g. those with training
interactions) leaves such items to be scored through the codes they share with trained items. Still, the tuples such
items get from their content alone lie where few training targets do, so the generator ranks them below the trained
ones as a group; ``cold_target_simulation`` scores a share of the training targets through the tuple their own content
alone gives them (``content_codes``), so that content-only tuples are targets too; ``cold_target_levels`` limits that
to the first levels (the code cell), the later ones staying the item's own.

``distill_weight`` > 0 mixes each position's negative log-likelihood with the cross-entropy to a teacher's
distribution of the same next item (CEMG's collaborative model): the teacher spreads each target over the items it
finds plausible, rare ones included, whose codes then get trained although they are seldom targets. Only training
reads the teacher; the ranking stays the code tuples' log-probabilities.

``code_mixer`` > 0 gives the output side interactions between levels: an item's output vector becomes its code
embeddings plus an MLP of the whole tuple (zero-initialised, so training starts from the additive scorer). The sum
over levels scores each code the same whatever the item's other codes, so two items that share most of their tuple
differ only by their last codes' fixed vectors; a token-level decoder conditions each code on its prefix instead. The
mixer is shared by all items and reads nothing but codes, so the ranker stays pure, and it runs once per step over the
item table, not once per user.

``codeword_projection`` adds to an item's output vector a learned projection of its quantised RQ-VAE latent (the sum of
its codewords, ``decode_codes``; fixed once the tokenizer is). Residual codes below the first level are directions
shared by every cell, and their learned embeddings are unrelated to each other, so two items that share their first
code and sit close in the RQ-VAE's latent share 1/L of their output vector and nothing else; the codewords keep
that closeness, so the generator can score an item's neighbours in the code space alike. A function of the code
tuple alone: the ranker stays pure.

``code_transition`` adds to each level's query a learned map of the codes of the item just read
(``code_transition.py``: the same level's code, or the whole tuple, of the last item or the last few): items that share
a cell with what was just read can be scored as a group, which the heads cannot do from the sum of code embeddings
the transformer reads. It reads nothing but codes, so the ranker stays pure.

``loss_mask_history`` leaves each position's history items out of its training softmax, as ``mask_history`` leaves
them out of the ranking. Where no item recurs (the Amazon sets) they are never the next item, and pushing one down
pushes down every item that shares its codes: the cell-mates of the item just read, which are often the next one. A
per-item output vector (SASRec's) can push one item down alone; a code tuple cannot. Training only, and meant for the
``mask_history`` protocol: unmasked, the history items are then ranked wherever their codes put them.

``n_items`` > 0 makes it a hybrid (``residual_item_embedding``): each item's output vector also gets a projection of
its collaborative embedding and a free vector of its own (initialised at 0), SASRec's output capacity beside the
codes; items are then ranked by more than their code tuple.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recbole_cemg.model.code_transition import CodeTransition
from recbole_cemg.model.generator import build_backbone, generator_dtype
from recbole_cemg.model.next_item import ItemSequence, NextItemGenerator, Teacher


class ItemLevelGenerator(NextItemGenerator):
    def __init__(self, level_sizes: list[int], collab_dim: int, max_history_items: int,
                 llm_path: str | None = None, llm_config: dict[str, Any] | None = None,
                 lora: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32, dropout: float = 0.1,
                 code_loss: str = "items", latent_dim: int = 0, num_beams: int = 20, n_items: int = 0,
                 loss_candidates: torch.Tensor | None = None, cold_target_simulation: float = 0.0,
                 cold_target_levels: int = 0, distill_weight: float = 0.0, code_mixer: int = 0,
                 codeword_dim: int = 0, code_transition: bool = False, transition_scope: str = "level",
                 transition_items: int = 1, view_levels: int = 0, loss_mask_history: bool = False) -> None:
        super().__init__(num_beams)
        self.model = build_backbone(llm_path, llm_config, lora, dtype, max_positions=max_history_items + 1)
        hidden = self.model.config.hidden_size
        self.dtype = dtype
        self.code_loss = code_loss
        # the output columns of each softmax over the items: one for all levels, or (views) one per tokenizer view
        width = hidden * len(level_sizes)
        starts = list(range(0, width - hidden, hidden * view_levels)) if code_loss == "views" else [0]
        self.expert_columns = [slice(start, end) for start, end in zip(starts, starts[1:] + [width])]
        self.cold_target_simulation = cold_target_simulation
        self.cold_target_levels = cold_target_levels or len(level_sizes)
        self.distill_weight = distill_weight
        self.code_embeddings = nn.ModuleList(nn.Embedding(size, hidden) for size in level_sizes)
        self.collab_projection = nn.Linear(collab_dim, hidden)
        # joint training: the tokenizer's quantised latent is an input too, so the generator's loss reaches it
        self.latent_projection = nn.Linear(latent_dim, hidden) if latent_dim else None
        self.input_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden, hidden) for _ in level_sizes)
        self.transition = CodeTransition(len(level_sizes), hidden, transition_scope, transition_items) \
            if code_transition else None
        for table in self.code_embeddings:
            nn.init.normal_(table.weight, std=hidden ** -0.5)
        self.code_mixer = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, code_mixer), nn.GELU(),
                                        nn.Linear(code_mixer, width)) if code_mixer else None
        if code_mixer:
            nn.init.zeros_(self.code_mixer[-1].weight)
            nn.init.zeros_(self.code_mixer[-1].bias)
        self.codeword_projection = nn.Linear(codeword_dim, width, bias=False) if codeword_dim else None
        if codeword_dim:  # training starts from the scorer of the codes' own embeddings
            nn.init.zeros_(self.codeword_projection.weight)
        self.residual_projection = nn.Linear(collab_dim, width, bias=False) if n_items else None
        self.residual_items = nn.Embedding(n_items, width) if n_items else None
        if n_items:
            nn.init.zeros_(self.residual_items.weight)
        self.register_buffer("loss_candidates", loss_candidates, persistent=False)
        self.loss_mask_history = loss_mask_history

    @classmethod
    def from_config(cls, config, level_sizes: list[int], collab_dim: int,
                    training_counts: torch.Tensor) -> ItemLevelGenerator:
        # every view's latent side by side (the collaborative view's: the collaborative embedding's width)
        latent_dim = config["rqvae_latent_dim"] * config["tokenizer_views"] + collab_dim * config["collab_view"]
        return cls(level_sizes, collab_dim, config["MAX_ITEM_LIST_LENGTH"], config["llm_path"], config["llm_config"],
                   config["lora"], generator_dtype(config), config["generator_dropout"], config["code_loss"],
                   latent_dim=latent_dim if config["joint_weight"] else 0,
                   num_beams=config["num_beams"],
                   n_items=len(training_counts) if config["residual_item_embedding"] else 0,
                   loss_candidates=training_counts > 0 if config["loss_candidates"] == "trained" else None,
                   cold_target_simulation=config["cold_target_simulation"],
                   cold_target_levels=config["cold_target_levels"], distill_weight=config["distill_weight"],
                   code_mixer=config["code_mixer"],
                   codeword_dim=latent_dim if config["codeword_projection"] else 0,
                   code_transition=config["code_transition"], transition_scope=config["transition_scope"],
                   transition_items=config["transition_items"],
                   view_levels=config["view_levels"] or config["codebook_levels"],
                   loss_mask_history=config["loss_mask_history"])

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """The output vector ``[n, levels * hidden]`` of code tuples ``[n, levels]``: their code embeddings side by
        side (+ the code mixer's function of the whole tuple, + the projection of their codewords)."""
        vectors = torch.cat([table(codes[..., level]) for level, table in enumerate(self.code_embeddings)], dim=-1)
        if self.code_mixer is not None:
            vectors = vectors + self.code_mixer(vectors)
        if self.codeword_projection is not None:
            vectors = vectors + self.codeword_projection(self.decode_codes(codes[:, :-1]))
        return vectors

    def item_vectors(self) -> torch.Tensor:
        """Every item's output vector ``[items, levels * hidden]``: its code tuple's (+ the hybrid's residual)."""
        vectors = self.code_vectors(self.item_codes)
        if self.residual_items is not None:
            vectors = vectors + self.residual_projection(self.item_collab) + self.residual_items.weight
        return vectors

    def simulated_target_codes(self, items: torch.Tensor) -> torch.Tensor:
        """The code tuples ``[..., levels]`` that cold-target simulation scores ``items`` through: their content-only
        codes on the first ``cold_target_levels`` levels, their own on the rest."""
        levels = self.cold_target_levels
        return torch.cat([self.content_codes[items, :levels], self.item_codes[items, levels:]], dim=-1)

    def states(self, sequence: ItemSequence) -> torch.Tensor:
        """The state after each item of the sequence, ``[batch, length, hidden]``. Causal attention never looks
        right, so padding after the last real item changes nothing before it and needs no mask."""
        codes = sequence.codes
        inputs = sum(table(codes[..., level]) for level, table in enumerate(self.code_embeddings))
        inputs = inputs + self.collab_projection(sequence.collab)
        if self.latent_projection is not None:
            inputs = inputs + self.latent_projection(sequence.latent)
        inputs = self.dropout(self.input_norm(inputs))
        positions = torch.arange(codes.shape[1], device=codes.device).unsqueeze(0).expand(codes.shape[0], -1)
        out = self.model(inputs_embeds=inputs.to(self.dtype), position_ids=positions)
        return self.dropout(out.last_hidden_state.float())

    def transition_terms(self, codes: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor | None:
        """What the code transition adds to the query of the state after item ``steps`` of sequence ``rows``
        (``codes`` ``[batch, length, levels]``), ``[n, levels * hidden]``; None without one. Only the scored states'
        last items are looked up: scoring reads one state per sequence."""
        if self.transition is None:
            return None
        positions = steps.unsqueeze(-1) - torch.arange(self.transition.items, device=steps.device)
        recent = codes[rows.unsqueeze(-1), positions.clamp(min=0)]  # [n, items, levels]
        vectors = torch.stack([table(recent[..., level]) for level, table in enumerate(self.code_embeddings)], dim=-2)
        return self.transition(vectors * (positions >= 0)[..., None, None])

    def item_log_probs(self, states: torch.Tensor, transition: torch.Tensor | None = None,
                       candidates: torch.Tensor | None = None,
                       content_targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Log-probability of every item's code tuple after each state ``[..., hidden]`` -> ``[..., items]``, among
        the ``candidates`` (a mask over the items; default all); the padding item and the others get -inf. Under
        ``code_loss: views``, the sum of each view's log-probability of its share of the tuple (``expert_columns``).
        ``transition`` ``[..., levels * hidden]``: the code transition's terms of those states (``transition_terms``).
        ``content_targets`` (rows of 2-d states, their items): those items are scored through their simulated
        (content-only) code tuples instead."""
        query = torch.cat([head(states) for head in self.heads], dim=-1)
        if transition is not None:
            query = query + transition
        vectors = self.item_vectors()
        simulated = None  # the output vectors of the content-only tuples of the simulated targets
        if content_targets is not None:
            simulated = self.code_vectors(self.simulated_target_codes(content_targets[1]))

        def scores(columns: slice) -> torch.Tensor:
            """The items' summed code logits over the output ``columns``; -inf outside the candidates. Under autocast
            (enable_amp) the products may be bf16, the normalisation stays fp32."""
            out = (query[..., columns] @ vectors[:, columns].T).float()
            if simulated is not None:
                rows, items = content_targets
                out[rows, items] = (query[rows, columns] * simulated[:, columns]).sum(-1).float()
            out[..., 0] = float("-inf")
            return out if candidates is None else out.masked_fill(~candidates, float("-inf"))

        if self.code_loss == "levels":
            queries = query.split(self.code_embeddings[0].embedding_dim, dim=-1)
            return scores(slice(None)) - sum(torch.logsumexp((q @ table.weight.T).float(), dim=-1, keepdim=True)
                                             for q, table in zip(queries, self.code_embeddings))
        return sum(torch.log_softmax(scores(columns), dim=-1) for columns in self.expert_columns)

    def loss(self, window: ItemSequence, all_positions: bool, teacher: Teacher | None = None) -> torch.Tensor:
        """One pass over the window trains every prefix (SASRec-style): the state after item ``t`` predicts item
        ``t + 1``; with a ``teacher``, ``(1 - distill_weight) * NLL + distill_weight * H(teacher, generator)``."""
        inputs = window.inputs()
        states = self.states(inputs)
        targets = window.items[:, 1:]
        predicted = targets > 0
        if not all_positions:  # only the prediction of each row's last item
            predicted = torch.zeros_like(predicted)
            predicted[torch.arange(len(targets), device=targets.device), window.lengths - 2] = True
        targets = targets[predicted]
        content_targets = None
        if self.cold_target_simulation:  # the targets seen as cold items: scored through their content-only tuples
            simulated = torch.nonzero(torch.rand(len(targets), device=targets.device) < self.cold_target_simulation)
            content_targets = simulated[:, 0], targets[simulated[:, 0]]
        rows, steps = torch.nonzero(predicted, as_tuple=True)  # the order of states[predicted]
        candidates = self.loss_candidates
        if self.loss_mask_history:
            unread = ~self.history_items(window.items[rows], steps, targets)
            candidates = unread if candidates is None else candidates & unread
        log_probs = self.item_log_probs(states[predicted], self.transition_terms(inputs.codes, rows, steps),
                                        candidates, content_targets)
        nll = F.nll_loss(log_probs, targets)
        if teacher is None or not self.distill_weight:
            return nll
        soft = teacher(window.items[rows], steps + 1)
        if candidates is not None:  # the teacher's distribution over the same candidates
            soft = torch.log_softmax(soft.masked_fill(~candidates, float("-inf")), dim=-1)
        soft = soft.exp()  # items the generator cannot score (padding, non-candidates) get 0 from the teacher
        cross_entropy = -(soft * log_probs.masked_fill(soft == 0, 0.0)).sum(-1).mean()
        return (1 - self.distill_weight) * nll + self.distill_weight * cross_entropy

    def history_items(self, items: torch.Tensor, steps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[n, items]``: True for the items among the first ``steps + 1`` of each row of ``items`` ``[n, length]``
        (what the state after item ``steps`` has read), but the row's target, which stays a candidate where an item
        recurs."""
        read = items * (torch.arange(items.shape[1], device=items.device) <= steps.unsqueeze(1))
        mask = torch.zeros(len(items), len(self.item_codes), dtype=torch.bool, device=items.device)
        mask.scatter_(1, read, True)
        mask[:, 0] = False
        mask[torch.arange(len(items), device=items.device), targets] = False
        return mask

    def all_item_scores(self, history: ItemSequence) -> torch.Tensor:
        """Every item's exact log-probability."""
        start = time.perf_counter()
        states = self.states(history)
        rows, steps = torch.arange(len(states), device=states.device), history.lengths - 1
        scores = self.item_log_probs(states[rows, steps], self.transition_terms(history.codes, rows, steps))
        self.decoding_stats.add_exact(len(scores), time.perf_counter() - start)
        return scores
