"""benchmarks/code_probe.py: how much of the collaborative embeddings an item's codes carry, out of sample."""

import json

import torch
from conftest import load_script

from recbole_cemg.checkpoints import read_checkpoint
from recbole_cemg.quick_start import run_cemg


def code_probe_module():
    return load_script("code_probe", "benchmarks")


def test_codes_that_cluster_the_embeddings_carry_them_to_unseen_items_and_random_codes_do_not():
    module = code_probe_module()
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(12, 8, generator=generator) * 3
    embeddings = centres[torch.randint(12, (600,), generator=generator)] + 0.3 * torch.randn(600, 8,
                                                                                           generator=generator)
    fitted = torch.arange(600) < 450
    groups = {"fitted": fitted, "held out": ~fitted}
    clustered, residual = module.residual_kmeans(embeddings, levels=2, size=16)
    assert clustered.shape == (600, 2) and int(clustered.max()) < 16 and residual.shape == (600,)
    carried = module.probe_r2(clustered, 16, embeddings, fitted, groups)
    shuffled = module.probe_r2(torch.randint(16, (600, 2), generator=generator), 16, embeddings, fitted, groups)
    assert carried["held out"] > 0.9 and carried["fitted"] > 0.9
    # random codes fit, weakly, only the items they were fitted on
    assert shuffled["held out"] < min(0.05, shuffled["fitted"])
    x = module.one_hot(torch.tensor([[0, 2], [1, 0]]), 3)
    assert x.tolist() == [[1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]]


def test_a_finished_run_is_probed_and_its_k_means_codes_are_read_back_by_another_run(tiny_run_config,
                                                                                     tmp_path):
    module = code_probe_module()
    config = dict(tiny_run_config["config_dict"], epochs=1, tokenizer_epochs=5)
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    written = str(tmp_path / "kmeans.codes.json")
    table = module.probe_table(result, min_count=2, write_codes=written)
    assert "| the run's codes | " in table and "| residual k-means of the embeddings, " in table
    with open(written, encoding="utf-8") as f:
        codes = json.load(f)["codes"]
    assert len({tuple(c) for c in codes.values()}) == len(codes)  # unique tuples, thanks to the last level
    reread = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], dict(config, tokenizer_path=written),
                      verbose=False)
    used = read_checkpoint(reread["checkpoint"], "checkpoint")["state_dict"]["item_codes"][1:]
    assert {tuple(c) for c in used.tolist()} == {tuple(c) for c in codes.values()}
