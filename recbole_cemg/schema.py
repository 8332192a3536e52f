"""Check a config's values against the schema files beside the defaults, before any work starts.

``properties/overall.schema.yaml`` holds the general training keys, ``properties/model/<model>.schema.yaml`` a
model's own keys (type, bounds, choices; the format is explained at the top of ``CEMG.schema.yaml``). A bad value
stops the run with an ``InputError`` naming the key, the value and what is expected, instead of a ``TypeError``
deep in training or a silent misbehaviour (``epochs: -1``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, MutableMapping
from typing import Any

import yaml

from recbole_cemg.errors import InputError
from recbole_cemg.shipped import PROPERTIES_DIR


TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
                                      "list": (list,), "dict": (dict,)}
NAMES = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
         "list": "a list", "dict": "a mapping such as {key: value}"}


@functools.cache
def schema(model: str | None = None) -> dict[str, dict[str, Any]]:
    """The rules for ``model``'s run: the general keys, then the model's own (which win)."""
    rules: dict[str, dict[str, Any]] = {}
    for path in (os.path.join(PROPERTIES_DIR, "overall.schema.yaml"),
                 os.path.join(PROPERTIES_DIR, "model", f"{model}.schema.yaml")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                rules.update(yaml.safe_load(f) or {})
    return rules


def check_config(config: MutableMapping[str, Any], model: str | None = None) -> None:
    """Raise ``InputError`` for the first key of ``config`` (a dict or RecBole ``Config``) that breaks its rule.

    A dict or list value written the YAML way on the command line (``--feature_files="{text: f.npz}"``, which
    RecBole keeps as a string) is parsed and stored back.
    """
    for key, rule in schema(model).items():
        if key not in config:
            continue
        value = _parse_yaml_string(config[key], rule)
        problem = violation(value, rule)
        if problem:
            raise InputError(f"config `{key}` = {config[key]!r}: expected {problem}. Fix it in your config file or "
                             f"on the command line (--{key}=...).")
        config[key] = value
    if model in RELATIONS:
        for key, problem in RELATIONS[model](config):
            raise InputError(f"config `{key}` = {config[key]!r}: {problem}")


def violation(value: Any, rule: dict[str, Any]) -> str:
    """'' if ``value`` follows ``rule``, else what was expected ("an integer >= 1")."""
    if value is None:
        return "" if rule.get("nullable") else describe(rule)
    if "choices" in rule:
        return "" if value in rule["choices"] else describe(rule)
    kinds = _kinds(rule)
    kind = next((k for k in kinds if _is(value, k)), None)
    if kind is None:
        return describe(rule)
    items = value if kind == "list" else [value]
    if kind == "list" and "of" in rule and not all(_is(item, rule["of"]) for item in items):
        return describe(rule)
    if kind in ("list", "int", "float") and not all(_in_bounds(item, rule) for item in items):
        return describe(rule)
    return ""


def describe(rule: dict[str, Any]) -> str:
    """What ``rule`` accepts, in words: "an integer >= 1", "one of guided, concat, mean", "a list of strings"."""
    if "choices" in rule:
        text = "one of " + ", ".join(map(str, rule["choices"]))
    else:
        names = []
        for kind in _kinds(rule):
            name = NAMES[kind]
            if kind == "list" and "of" in rule:
                name = f"a list of {NAMES[rule['of']].removeprefix('an ').removeprefix('a ')}s"
            names.append(name)
        bounds = [f"{op} {rule[key]}" for key, op in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))
                  if key in rule]
        text = " or ".join(names) + (" " + " and ".join(bounds) if bounds else "")
    return text + (", or ~ (none)" if rule.get("nullable") else "")


def _kinds(rule: dict[str, Any]) -> list[str]:
    kinds = rule.get("type", "str")
    return kinds if isinstance(kinds, list) else [kinds]


def _is(value: Any, kind: str) -> bool:
    return isinstance(value, TYPES[kind]) and not (kind in ("int", "float") and isinstance(value, bool))


def _in_bounds(number: Any, rule: dict[str, Any]) -> bool:
    return (number >= rule.get("min", number) and number <= rule.get("max", number)
            and ("above" not in rule or number > rule["above"]) and ("below" not in rule or number < rule["below"]))


def _parse_yaml_string(value: Any, rule: dict[str, Any]) -> Any:
    """``"{text: f.npz}"`` -> ``{"text": "f.npz"}`` where the rule wants a dict or list and not a string; a tuple
    (RecBole's reading of ``--topk=5,10``) -> a list."""
    kinds = _kinds(rule)
    if isinstance(value, tuple) and "list" in kinds:
        return list(value)
    if not isinstance(value, str) or "str" in kinds or not {"dict", "list"} & set(kinds) or "choices" in rule:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _cemg_relations(config: MutableMapping[str, Any]) -> Iterator[tuple[str, str]]:
    """CEMG's rules between keys, as (key, what is wrong and what to do)."""
    topk = config["topk"] if isinstance(config["topk"], (list, tuple)) else [config["topk"]]
    if config["num_beams"] < max(topk):
        yield "num_beams", f"must be at least the largest topk ({max(topk)}), else the top-k lists are cut short."
    if not config["modalities"] and not config["collab_in_fusion"]:
        yield "modalities", "no modality to tokenize: list content modalities or set collab_in_fusion: True."
    if config["cold_simulation"] and not config["modalities"]:
        yield "cold_simulation", ("simulating cold-start items predicts their collaborative embedding from content: "
                                  "list content modalities, or set cold_simulation: 0.")
    if config["cold_target_simulation"]:
        missing = [fix for fix, ok in (("list content modalities", bool(config["modalities"])),
                                       ("set generator_input: items", config["generator_input"] == "items"),
                                       ("set residual_item_embedding: False", not config["residual_item_embedding"]),
                                       ("set joint_weight: 0", not config["joint_weight"])) if not ok]
        if missing:
            yield "cold_target_simulation", ("scoring training targets through the code tuple their content alone "
                                             "gives them needs the pure item-level generator with fixed codes: "
                                             + ", ".join(missing) + "; or set cold_target_simulation: 0.")
    if config["cold_target_levels"] > config["codebook_levels"]:
        yield "cold_target_levels", (f"above codebook_levels ({config['codebook_levels']}): at most that many levels "
                                     "come from the content (0: every level).")
    if config["view_levels"] > config["codebook_levels"]:
        yield "view_levels", (f"above codebook_levels ({config['codebook_levels']}): a view keeps at most the codes "
                              "it fits (0: all of them).")
    if config["quantizer"] == "product" and 0 < config["view_levels"] < config["codebook_levels"]:
        yield "view_levels", ("a product quantiser's codes are equal slices of the latent, not coarse to fine, so a "
                              "leading few are no coarser summary: set view_levels: 0, or quantizer: residual.")
    if config["quantizer"] == "product" and config["rqvae_latent_dim"] % config["codebook_levels"]:
        yield "quantizer", (f"a product quantiser cuts the latent into codebook_levels ({config['codebook_levels']}) "
                            f"equal parts: set rqvae_latent_dim ({config['rqvae_latent_dim']}) to a multiple of it, "
                            "or quantizer: residual.")
    lora = config["lora"]
    if lora and not (isinstance(lora.get("r", 8), int) and lora.get("r", 8) > 0):
        yield "lora", "the LoRA rank `r` must be a positive integer."
    if lora and not config["llm_path"]:
        yield "lora", "LoRA needs a pretrained model in `llm_path`."
    if lora:
        import dataclasses

        from peft import LoraConfig

        known = {field.name for field in dataclasses.fields(LoraConfig)}
        for key in sorted(set(lora) - known):
            yield "lora", (f"'{key}' is not a LoRA setting (peft's LoraConfig knows e.g. r, lora_alpha, "
                           "lora_dropout, target_modules). Fix its name.")
    if config["train_all_positions"] and config["prompt_suffix"]:
        yield "train_all_positions", ("training on all positions cannot place a `prompt_suffix`; set "
                                      "train_all_positions: False.")
    needs_items_likelihood = (
        ("loss_candidates", "choosing the training softmax's candidates", "the likelihood over the items",
         config["loss_candidates"] == "trained"),
        ("loss_mask_history", "leaving the history items out of the training softmax", "the likelihood over the items",
         config["loss_mask_history"]),
        ("code_mixer", "mixing the levels of an item's output vector",
         "per-level softmaxes assume a sum over levels", bool(config["code_mixer"])),
        ("codeword_projection", "adding the codewords to an item's output vector",
         "per-level softmaxes assume a sum over levels", config["codeword_projection"]))
    for key, what, why, used in needs_items_likelihood:
        if used and (config["generator_input"] != "items" or config["code_loss"] == "levels"):
            yield key, f"{what} needs the item-level generator with code_loss: items or views ({why})."
    for key in ("collab_view_levels", "collab_view_size"):
        if config[key] and not config["collab_view"]:
            yield key, f"shapes the collaborative view, which is off: set collab_view: True, or {key}: 0."
    kept = config["view_levels"] or config["codebook_levels"]
    if config["code_loss"] == "views" and config["collab_view"] and config["collab_view_levels"] not in (0, kept):
        yield "code_loss", (f"views cuts the output layer into equal shares of {kept} levels (view_levels, or else "
                            "codebook_levels), and the collaborative view keeps another number: set "
                            "collab_view_levels: 0, or code_loss: items.")
    if config["code_loss"] == "views" and config["tokenizer_views"] + config["collab_view"] < 2:
        yield "code_loss", ("views trains one softmax per tokenizer view, and this run has one view: set "
                            "tokenizer_views: 2 (or more), or code_loss: items.")
    needs_the_item_generator = (
        ("joint_weight", "joint training", "joint_weight: 0", bool(config["joint_weight"])),
        ("code_transition", "the code transition (it feeds the item-level generator's heads)",
         "code_transition: False", config["code_transition"]),
        ("residual_item_embedding", "the residual item embedding (it extends the item-level generator's output layer)",
         "residual_item_embedding: False", config["residual_item_embedding"]))
    for key, what, off, used in needs_the_item_generator:
        if used and config["generator_input"] != "items":
            yield key, f"{what} needs the item-level generator: set generator_input: items, or {off}."
    for key, default in (("transition_scope", "level"), ("transition_items", 1)):
        if config[key] != default and not config["code_transition"]:
            yield key, f"shapes the code transition, which is off: set code_transition: True, or {key}: {default}."
    needs_the_tokenizer = (
        ("joint_weight", "joint training trains the tokenizer, `tokenizer_path` reuses fixed codes",
         "joint_weight: 0", bool(config["joint_weight"])),
        ("codeword_projection", "the codewords are the RQ-VAE's that made the codes; a codes file "
         "(`tokenizer_path`) has none", "codeword_projection: False", config["codeword_projection"]))
    for key, why, off, used in needs_the_tokenizer:
        if used and config["tokenizer_path"]:
            yield key, f"{why}: leave tokenizer_path empty or set {off}."
    if config["train_all_positions"] and config["train_stride"] > config["MAX_ITEM_LIST_LENGTH"]:
        yield "train_stride", (f"above MAX_ITEM_LIST_LENGTH ({config['MAX_ITEM_LIST_LENGTH']}): the windows would "
                               "leave some training targets out. Use a stride of at most MAX_ITEM_LIST_LENGTH.")
    reads_collab_model = (("score_fusion_weights", "score fusion", any(config["score_fusion_weights"])),
                          ("distill_weight", "distillation", bool(config["distill_weight"])))
    for key, what, used in reads_collab_model:
        if not used:
            continue
        if config["generator_input"] != "items":
            yield key, f"{what} needs the item-level generator (generator_input: items), which scores every item."
        if config["collab_source"].endswith(".npz"):
            yield key, (f"{what} needs the collaborative model itself: a RecBole model name or checkpoint (.pth) as "
                        "`collab_source`, not a feature file.")


RELATIONS = {"CEMG": _cemg_relations}
