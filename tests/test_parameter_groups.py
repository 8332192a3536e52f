"""Weight decay by parameter kind (``weight_decay_scope``): with ``matrices`` AdamW leaves embeddings, biases and
norm gains alone and still decays the weight matrices."""

from __future__ import annotations

import pytest
import torch

from recbole_cemg.model.item_generator import ItemLevelGenerator
from recbole_cemg.trainer import parameter_groups

LLM_CONFIG = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2}


@pytest.mark.parametrize("scope", ["all", "matrices"])
def test_decay_step_moves_only_the_parameters_of_the_scope(scope):
    torch.manual_seed(0)
    model = ItemLevelGenerator([4, 3], collab_dim=5, max_history_items=4, llm_config=dict(LLM_CONFIG))
    groups = parameter_groups(model, 0.5, scope)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # every parameter, once
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():  # no gradient signal: only weight decay can move a parameter
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    kept = set(before) - moved
    assert "heads.0.weight" in moved and "collab_projection.weight" in moved
    if scope == "all":
        assert not {n for n in kept if before[n].abs().sum() > 0}  # everything non-zero decays
    else:
        assert {"code_embeddings.0.weight", "collab_projection.bias", "input_norm.weight"} <= kept
        assert all(before[n].dim() == 2 and "embeddings" not in n for n in moved)
