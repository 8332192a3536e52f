"""The generator: a Hugging Face causal LM that reads the history's item codes and writes the next item's codes.

Two ways to get the LM, one forward path for both:

* ``llm_path`` (a hub name or a local folder): ``AutoModelForCausalLM`` + ``AutoTokenizer``; one new token per
  (level, code) is added to the tokenizer and the embedding table, the history is wrapped in a short prompt, and the
  model is fine-tuned fully or with LoRA (peft), the new token rows staying trainable;
* ``llm_config`` (no path): a small model of any Hugging Face architecture built from a config dict and trained
  from scratch, with a vocabulary of only the code tokens plus padding and BOS.

A sequence is ``prefix + (left padding) + history codes + suffix + target codes``; the loss covers only the target
codes. As CEMG's token-level ``NextItemGenerator`` it ranks by trie-constrained beam search (``decoding.py``); the
items outside the beams rank below them by training popularity. This module also builds the backbone of the
item-level generator (``build_backbone``).
"""

from __future__ import annotations

import os
import time
from logging import getLogger
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from recbole_cemg.errors import InputError, MissingFileError
from recbole_cemg.model.decoding import CodeTrie, constrained_beam_search
from recbole_cemg.model.next_item import ItemSequence, NextItemGenerator, Teacher

PAD, BOS = 0, 1
SCRATCH_SPECIAL_TOKENS = 2
# Items outside the beams get scores below every beam: FALLBACK_SCORE minus their training-popularity rank, so the
# order of the tail is fixed (never a tie left to ``topk``).
FALLBACK_SCORE = -1.0e6


def code_token(level: int, code: int) -> str:
    return f"<c{level}_{code}>"


class CodeGenerator(NextItemGenerator):
    def __init__(self, level_sizes: list[int], max_history_items: int, llm_path: str | None = None,
                 llm_config: dict[str, Any] | None = None, lora: dict[str, Any] | None = None,
                 prompt: str = "", prompt_suffix: str = "", dtype: torch.dtype = torch.float32,
                 num_beams: int = 20, training_counts: torch.Tensor | None = None) -> None:
        super().__init__(num_beams)
        self.num_beams = num_beams
        self.level_sizes = list(level_sizes)
        self.code_length = len(level_sizes)
        if llm_path:
            self.model, first_code_id, prefix, suffix = _load_pretrained(llm_path, level_sizes, prompt,
                                                                        prompt_suffix, dtype)
            self.pad_id = self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0
        else:
            first_code_id, prefix, suffix = SCRATCH_SPECIAL_TOKENS, [BOS], []
            self.model = _build_from_config(llm_config or {}, first_code_id + sum(level_sizes),
                                            max_positions=len(prefix) + (max_history_items + 1) * self.code_length)
            self.pad_id = PAD
        offsets = torch.tensor([first_code_id + sum(level_sizes[:i]) for i in range(len(level_sizes))])
        self.register_buffer("level_offsets", offsets, persistent=False)
        self.register_buffer("prefix_ids", torch.tensor(prefix, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(suffix, dtype=torch.long), persistent=False)
        if lora:
            self.model = _wrap_lora(self.model, lora, range(first_code_id, first_code_id + sum(level_sizes)))
        if training_counts is not None:
            self.register_buffer("fallback_scores", fallback_scores(training_counts), persistent=False)
        self.trie: CodeTrie | None = None

    @classmethod
    def from_config(cls, config, level_sizes: list[int], collab_dim: int,
                    training_counts: torch.Tensor) -> CodeGenerator:
        return cls(level_sizes, config["MAX_ITEM_LIST_LENGTH"], config["llm_path"], config["llm_config"],
                   config["lora"], config["prompt"] or "", config["prompt_suffix"] or "", generator_dtype(config),
                   config["num_beams"], training_counts)

    def set_items(self, item_codes: torch.Tensor, collab_embeddings: torch.Tensor,
                  content_codes: torch.Tensor | None = None,
                  decode_codes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().set_items(item_codes, collab_embeddings, content_codes, decode_codes)
        items = torch.arange(1, len(item_codes))
        self.trie = CodeTrie(item_codes.cpu(), items, self.level_sizes).to(item_codes.device)

    # ----------------------------------------------------------------------------------------------- contract
    def loss(self, window: ItemSequence, all_positions: bool, teacher: Teacher | None = None) -> torch.Tensor:
        """Cross-entropy of the code tokens: of the last item only, or of every item after the first. No
        distillation (the schema refuses ``distill_weight`` here): ``teacher`` must be None."""
        if teacher is not None:
            raise NotImplementedError("distillation needs the item-level generator (generator_input: items)")
        tokens = self.code_tokens(window.codes)
        if all_positions:
            return self.sequence_loss(tokens, window.lengths)
        last = torch.arange(len(tokens), device=tokens.device), window.lengths - 1
        return self.target_loss(tokens[:, :-1], window.lengths - 1, tokens[last])

    def all_item_scores(self, history: ItemSequence) -> torch.Tensor:
        """Trie-constrained beam search: the beams' items get their log-probability; all others rank below them in
        a fixed order (training popularity)."""
        tokens = self.code_tokens(history.codes)
        start = time.perf_counter()
        items, scores = constrained_beam_search(self, self.trie, tokens, history.lengths, self.num_beams)
        self.decoding_stats.add(items, len(self.item_codes), time.perf_counter() - start)
        full = self.fallback_scores.unsqueeze(0).repeat(len(items), 1)
        found = items >= 0
        rows = torch.arange(len(items), device=items.device).unsqueeze(1).expand_as(items)
        full[rows[found], items[found]] = scores[found]
        return full

    def item_scores(self, history: ItemSequence, items: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probability of the given item's code tuple."""
        return self.target_log_probs(self.code_tokens(history.codes), history.lengths,
                                     self.code_tokens(self.item_codes[items])).sum(-1)

    # ----------------------------------------------------------------------------------------------- inputs
    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids of code tuples ``[..., levels]``."""
        return codes + self.level_offsets

    def history_inputs(self, history_tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[batch, items, levels]`` right-padded history tokens -> left-padded prompt ids and attention mask."""
        batch, items, levels = history_tokens.shape
        # Rotate each row so that its ``lengths[b]`` real items end the row (padding moves to the front).
        source = (torch.arange(items, device=lengths.device).unsqueeze(0) + lengths.unsqueeze(1)) % items
        rotated = history_tokens.gather(1, source.unsqueeze(-1).expand(-1, -1, levels))
        real = torch.arange(items, device=lengths.device).unsqueeze(0) >= (items - lengths).unsqueeze(1)
        # Drop the leading columns that are padding in every row (short histories need no 20-item window).
        real = real[:, int((items - lengths.max()).clamp(min=0)):]
        rotated = rotated[:, rotated.shape[1] - real.shape[1]:]
        ids = torch.where(real.unsqueeze(-1), rotated, torch.full_like(rotated, self.pad_id)).flatten(1)
        mask = real.unsqueeze(-1).expand(-1, -1, levels).flatten(1)
        prefix = self.prefix_ids.expand(batch, -1)
        suffix = self.suffix_ids.expand(batch, -1)
        ids = torch.cat([prefix, ids, suffix], dim=1)
        mask = torch.cat([torch.ones_like(prefix, dtype=torch.bool), mask,
                          torch.ones_like(suffix, dtype=torch.bool)], dim=1)
        return ids, mask.long()

    def forward_ids(self, ids: torch.Tensor, mask: torch.Tensor, keep: int, **kwargs) -> Any:
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, **kwargs)

    # ----------------------------------------------------------------------------------------------- scoring
    def _target_logits(self, history_tokens: torch.Tensor, lengths: torch.Tensor,
                       target_tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, levels, vocab]`` that predict each target code token (teacher forcing)."""
        ids, mask = self.history_inputs(history_tokens, lengths)
        ids = torch.cat([ids, target_tokens], dim=1)
        mask = torch.cat([mask, torch.ones_like(target_tokens)], dim=1)
        return self.forward_ids(ids, mask, keep=self.code_length + 1).logits[:, :-1].float()

    def target_log_probs(self, history_tokens: torch.Tensor, lengths: torch.Tensor,
                         target_tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability of each target code token, ``[batch, levels]``."""
        logits = self._target_logits(history_tokens, lengths, target_tokens)
        return torch.log_softmax(logits, dim=-1).gather(-1, target_tokens.unsqueeze(-1)).squeeze(-1)

    def target_loss(self, history_tokens: torch.Tensor, lengths: torch.Tensor,
                    target_tokens: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the target item's code tokens."""
        logits = self._target_logits(history_tokens, lengths, target_tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_tokens.reshape(-1))

    def sequence_loss(self, item_tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the codes of every item after the first, each given the items before it.

        One pass over a window of ``lengths[b]`` items trains ``lengths[b] - 1`` next-item predictions at once,
        the way decoder-only recommenders (SASRec, GPT-style generators) are usually trained.
        """
        if len(self.suffix_ids):
            raise ValueError("Training on all positions needs an empty `prompt_suffix`.")
        ids, mask = self.history_inputs(item_tokens, lengths)
        logits = self.forward_ids(ids, mask, keep=0).logits[:, :-1].float()
        first_predicted = ids.shape[1] - (lengths.unsqueeze(1) - 1) * self.code_length
        predicted = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) >= first_predicted
        labels = ids.masked_fill(~predicted, -100)[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def fallback_scores(training_counts: torch.Tensor) -> torch.Tensor:
    """Scores below every beam, ranking the items by training popularity without ties."""
    rank = torch.empty(len(training_counts), dtype=torch.long)
    rank[torch.argsort(-training_counts, stable=True)] = torch.arange(len(training_counts))
    return FALLBACK_SCORE - rank.float()


def generator_dtype(config) -> torch.dtype:
    if config["llm_dtype"] == "bfloat16":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and config["device"].type == "cuda":
            return torch.bfloat16
        getLogger().warning("llm_dtype bfloat16 is not supported on this device; using float32.")
    return torch.float32


def build_backbone(llm_path: str | None, llm_config: dict[str, Any] | None, lora: dict[str, Any] | None,
                   dtype: torch.dtype, max_positions: int) -> nn.Module:
    """A transformer without language-model head that reads vectors (``inputs_embeds``), for the item-level
    generator: pretrained from ``llm_path`` (with LoRA adapters when ``lora`` is set) or built from ``llm_config``."""
    if not llm_path:
        return _build_from_config(llm_config or {}, SCRATCH_SPECIAL_TOKENS, max_positions, head=False)
    from transformers import AutoModel

    path = _checked_path(llm_path)
    try:
        model = AutoModel.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not load the model from `llm_path` '{path}': {str(error).splitlines()[0]}") from error
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="FEATURE_EXTRACTION", **_lora_settings(lora)))
    return model


def _build_from_config(llm_config: dict[str, Any], vocab_size: int, max_positions: int,
                       head: bool = True) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    settings = dict(llm_config)
    model_type = settings.pop("model_type", "llama")
    settings.setdefault("max_position_embeddings", max_positions)
    if settings["max_position_embeddings"] < max_positions:
        raise InputError(f"`llm_config.max_position_embeddings` ({settings['max_position_embeddings']}) is shorter "
                         f"than the longest input ({max_positions} positions).")
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=PAD, bos_token_id=BOS,
                                  eos_token_id=None, **settings)
    return (AutoModelForCausalLM if head else AutoModel).from_config(config)


def _checked_path(llm_path: str) -> str:
    llm_path = os.path.expanduser(llm_path)
    if llm_path.startswith((".", "/")) and not os.path.isdir(llm_path):  # a path, not a hub name
        raise MissingFileError(f"`llm_path` '{llm_path}' is not a folder. Give a local model folder or a hub name "
                                "such as Qwen/Qwen2.5-0.5B (hub names need network access).")
    if os.path.isdir(llm_path) and not os.path.isfile(os.path.join(llm_path, "config.json")):
        raise MissingFileError(f"`llm_path` '{llm_path}' holds no config.json, so it is not a model folder. Give the "
                               "folder that save_pretrained wrote (config.json, weights, tokenizer files).")
    return llm_path


def _lora_settings(lora: dict[str, Any]) -> dict[str, Any]:
    return {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear", **lora}


def _load_pretrained(llm_path: str, level_sizes: list[int], prompt: str, prompt_suffix: str,
                     dtype: torch.dtype) -> tuple[nn.Module, int, list[int], list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm_path = _checked_path(llm_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_path)
        model = AutoModelForCausalLM.from_pretrained(llm_path, dtype=dtype)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not load the LLM from `llm_path` '{llm_path}': {str(error).splitlines()[0]}"
                         ) from error
    new_tokens = [code_token(level, code) for level, size in enumerate(level_sizes) for code in range(size)]
    tokenizer.add_tokens(new_tokens, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(new_tokens)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise InputError(f"The tokenizer of '{llm_path}' already knows some code tokens like '{new_tokens[0]}'.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    prefix = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    if not prefix and tokenizer.bos_token_id is not None:
        prefix = [tokenizer.bos_token_id]
    suffix = tokenizer(prompt_suffix, add_special_tokens=False)["input_ids"] if prompt_suffix else []
    return model, ids[0], prefix, suffix


def _wrap_lora(model: nn.Module, lora: dict[str, Any], code_token_ids: range) -> nn.Module:
    """LoRA adapters on the chosen modules; the rows of the new code tokens in the input embedding (and in an
    untied output layer) stay trainable, otherwise they would keep their random initialisation."""
    from peft import LoraConfig, get_peft_model

    names = {module: name for name, module in model.named_modules()}
    ids = list(code_token_ids)
    trainable_rows = {names[model.get_input_embeddings()].rsplit(".", 1)[-1]: ids}
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        trainable_rows[names[output].rsplit(".", 1)[-1]] = ids
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", trainable_token_indices=trainable_rows,
                                            **_lora_settings(lora)))
