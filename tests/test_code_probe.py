"""benchmarks/code_probe.py: how much of the collaborative embeddings an item's codes carry, out of sample."""

import importlib.util
import os

import torch
from conftest import ROOT


def code_probe_module():
    spec = importlib.util.spec_from_file_location("code_probe", os.path.join(ROOT, "benchmarks", "code_probe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codes_that_cluster_the_embeddings_carry_them_to_unseen_items_and_random_codes_do_not():
    module = code_probe_module()
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(12, 8, generator=generator) * 3
    embeddings = centres[torch.randint(12, (600,), generator=generator)] + 0.3 * torch.randn(600, 8,
                                                                                           generator=generator)
    fitted = torch.arange(600) < 450
    groups = {"fitted": fitted, "held out": ~fitted}
    clustered = module.residual_kmeans(embeddings, levels=2, size=16)
    assert clustered.shape == (600, 2) and int(clustered.max()) < 16
    carried = module.probe_r2(clustered, 16, embeddings, fitted, groups)
    shuffled = module.probe_r2(torch.randint(16, (600, 2), generator=generator), 16, embeddings, fitted, groups)
    assert carried["held out"] > 0.9 and carried["fitted"] > 0.9
    assert shuffled["held out"] < min(0.05, shuffled["fitted"])  # random codes fit, weakly, only what they were fitted on
    x = module.one_hot(torch.tensor([[0, 2], [1, 0]]), 3)
    assert x.tolist() == [[1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]]
