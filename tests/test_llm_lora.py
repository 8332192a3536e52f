"""A pretrained causal LM loaded from a local folder (`llm_path`) and fine-tuned with LoRA (peft)."""

import json
import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recbole_cemg.model.generator import CodeGenerator
from recbole_cemg.quick_start import run_cemg

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "the", "user", "bought", ":", "next", "item"]


def save_tiny_llama(folder: str, tied: bool) -> str:
    """A randomly initialised Llama and a word-level tokenizer, saved the way a hub model is."""
    vocab = {word: i for i, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("tied", [False, True])
def test_lora_trains_only_the_adapter_and_the_code_token_rows(tmp_path, tied):
    folder = save_tiny_llama(str(tmp_path / "llm"), tied)
    generator = CodeGenerator([4, 4, 3], 5, llm_path=folder, lora={"r": 4, "lora_alpha": 8},
                              prompt="the user bought :", prompt_suffix="next item :")
    assert generator.prefix_ids.tolist() == [4, 5, 6, 7]  # the prompt is tokenized, not code tokens
    first_code = len(WORDS)
    assert generator.level_offsets.tolist() == [first_code, first_code + 4, first_code + 8]

    embed = generator.model.get_input_embeddings()
    old_rows = torch.arange(first_code)
    new_rows = torch.arange(first_code, first_code + 11)
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    old_before, new_before = embed(old_rows).detach().clone(), embed(new_rows).detach().clone()
    optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=1e-2)
    history = generator.code_tokens(torch.tensor([[[0, 1, 2], [1, 2, 0], [3, 3, 1], [0, 0, 0], [0, 0, 0]]]))
    target = generator.code_tokens(torch.tensor([[2, 1, 0]]))
    losses = []
    for _ in range(20):
        loss = generator.target_loss(history, torch.tensor([3]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5

    changed = {n for n, p in generator.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n or "trainable_tokens" in n for n in changed)
    assert any("embed_tokens" in n and "trainable_tokens" in n for n in changed)
    assert any("lm_head" in n for n in changed) != tied  # an untied output layer gets its own trainable rows
    assert torch.equal(embed(old_rows), old_before)  # the pretrained vocabulary is untouched
    assert not torch.allclose(embed(new_rows), new_before)  # the code tokens learned


@pytest.mark.parametrize("generator_input", ["tokens", "items"])
def test_cemg_with_lora_checkpoints_only_trainable_weights_and_reloads(tmp_path, tiny_run_config, generator_input):
    folder = save_tiny_llama(str(tmp_path / "llm"), tied=False)
    config_dict = dict(tiny_run_config["config_dict"], llm_path=folder, lora={"r": 4, "lora_alpha": 8},
                       prompt="the user bought :", epochs=4, generator_input=generator_input)
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config_dict)
    assert result["decoding"]["invalid_share"] == 0 and result["decoding"]["repeated_share"] == 0
    assert result["test_result"]["recall@10"] > 0.2  # 60 items: chance is 1/6

    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    names = set(checkpoint["state_dict"])
    adapted = {n for n in names if n.startswith("generator.model.")}
    assert adapted and all("lora_" in n or "trainable_tokens" in n for n in adapted)
    assert not any("base_layer" in n or n.endswith("q_proj.weight") for n in names)
    if generator_input == "items":  # the item-level generator's own layers (code embeddings, heads) train fully
        assert {n for n in names if n.startswith("generator.")} - adapted >= {"generator.heads.0.weight",
                                                                              "generator.code_embeddings.0.weight"}
    adapter = os.path.splitext(result["checkpoint"])[0] + ".adapter"
    with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as f:
        assert json.load(f)["r"] == 4


def test_missing_llm_folder_is_named(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        CodeGenerator([4, 4], 5, llm_path=missing)
