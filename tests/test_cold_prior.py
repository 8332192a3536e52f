"""benchmarks/cold_prior.py: a finished cold-start run reloaded from its checkpoint, scored with a prior on the held-out
items."""

import argparse
import os
import re

import pytest
import torch
from conftest import ROOT, load_script

from recbole_cemg.compare import load_run, markdown_table, summarise
from recbole_cemg.errors import InputError
from recbole_cemg.quick_start import run_cemg


def cold_prior_module():
    return load_script("cold_prior", "benchmarks")


def test_the_reloaded_run_reproduces_its_record_and_a_prior_moves_lists_toward_cold_items(tiny_run_config, tmp_path):
    config = dict(tiny_run_config["config_dict"], cold_item_ratio=0.15, epochs=2, tokenizer_epochs=10,
                  loss_candidates="trained")
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    module = cold_prior_module()
    model, data = module.rebuild(result)
    test = module.scored(model, data.test)
    recorded = module.with_prior(test, data.cold, module.constant_prior(0.0))
    assert recorded["all"] == pytest.approx(result["test_result"]["recall@10"], abs=1e-4)  # the same model and users
    assert recorded["cold"] == pytest.approx(result["cold_start"]["test_result"]["recall@10"], abs=1e-4)
    assert recorded["share"] == pytest.approx(result["cold_start"]["cold_share@10"], abs=1e-6)
    pushed = module.with_prior(test, data.cold, module.constant_prior(50.0))
    # the held-out items fill the lists as far as there are enough of them (9 of them here, none of a history)
    assert pushed["share"] == pytest.approx(min(int(data.cold.sum()), 10) / 10, abs=0.02)
    assert pushed["share"] > recorded["share"] and pushed["cold"] >= recorded["cold"]
    assert pushed["cold"] == pytest.approx(module.among_cold_only(test, data.cold))  # ... ranked among themselves
    # content similarity added to the scores: its weight moves the lists from the run's toward the content's own
    features = os.path.join(ROOT, "tests", "data", "tiny", "tiny.text.npz")
    content = module.scored(module.content_similarity(result, data.train._dataset, features), data.test)
    alone = module.with_prior(content, data.cold, module.constant_prior(0.0))
    assert alone["share"] > 0.0 and alone != recorded  # it knows the held-out items as well as the others
    same = module.with_prior(module.with_content(test, content, 0.0), data.cold, module.constant_prior(0.0))
    dominated = module.with_prior(module.with_content(test, content, 1e4), data.cold, module.constant_prior(0.0))
    assert same == recorded and dominated == pytest.approx(alone)
    saved = tmp_path / "point.json"
    table = module.prior_table(result, [0.0, 50.0], [0.3], features, [0.0, 1e4], keep_warm=0.0, save=str(saved))
    points = table.split("Operating points")[1].split("\n\n")[1].splitlines()[2:]  # the run, + 0 and + 1e4 x content
    names = [p.replace("**", "").split(" | ")[0] for p in points]
    assert [n.split(", ")[1:] for n in names] == [[], ["+ 0 x content"], ["+ 10000 x content"]]
    assert sum("**" in p for p in points) == 1
    # no warm floor: each weight's b lifts the held-out items above everything, so the cold-target recall is theirs
    # among the held-out items alone, for weight 0 the run's own order of them
    assert f"| {module.among_cold_only(test, data.cold):.4f} |" in points[0]
    # the bold point as a result file: its test cells are its metrics, and it merges beside the run it came from
    point = load_run(str(saved))
    bold = next(p for p in points if "**" in p).replace("**", "").split(" | ")
    test_all, test_cold, test_warm, test_share = (float(c.strip(" |")) for c in bold[5:9])
    assert point["operating_point"]["bias"] == 64.0 and point["model"].startswith("CEMG")
    assert point["operating_point"]["warm_reference"]["model"] == "itself"
    assert point["test_result"]["recall@10"] == pytest.approx(test_all, abs=1e-4)
    assert point["cold_start"]["test_result"]["recall@10"] == pytest.approx(test_cold, abs=1e-4)
    assert point["cold_start"]["warm_result"]["recall@10"] == pytest.approx(test_warm, abs=1e-4)
    assert point["cold_start"]["cold_share@10"] == pytest.approx(test_share, abs=1e-3)
    assert point["per_user"].held_out.sum() == point["cold_start"]["test_users"] > 1
    [run_row, point_row] = summarise([result, point], reference=result["model"])
    cold_gain = point["cold_start"]["test_result"]["recall@10"] - result["cold_start"]["test_result"]["recall@10"]
    assert point_row["vs ref cold recall@10"] == pytest.approx(cold_gain, abs=2e-4)  # one seed: the difference
    assert point_row["vs ref recall@10"] == pytest.approx(test_all - result["test_result"]["recall@10"], abs=2e-4)
    assert "Δ cold recall@10 vs CEMG" in markdown_table([run_row, point_row])
    table = module.prior_table(result, [0.0, 50.0], [0.3], features, [0.0, 1e4])
    assert f"| b = 0 | {result['best_valid_result']['recall@10']:.4f} |" in table  # valid of the best epoch
    assert "| mixture 0.3 | " in table
    assert table.count(f"| b = 0 | {result['best_valid_result']['recall@10']:.4f} |") == 1
    test_cells = " | ".join(f"{alone[key]:.{3 if key == 'share' else 4}f}" for key in ("all", "cold", "warm", "share"))
    assert f" | {test_cells} |" in table.split("| b = 0, + 10000 x content |")[1].splitlines()[0]
    assert "| b = 0, + 0 x content | " + table.split("| b = 0 | ")[1].splitlines()[0] in table
    codes, cold = model.item_codes, data.cold
    for level in range(codes.shape[1] - 1):
        crowded = sum(int((codes[cold, level] == c).sum()) for c in codes[cold, level].unique()
                      if (codes[cold, level] == c).sum() > (codes[model.warm_items, level] == c).sum())
        assert f"| {level + 1} | {len(codes[cold, level].unique())} of " in table
        assert f" | {crowded} of {int(cold.sum())} |" in table.splitlines()[-codes.shape[1] + 1 + level]


def test_operating_points_keep_the_warm_recall_of_the_same_model_at_ratio_0_with_the_same_content_weight(
        tiny_run_config):
    config = dict(tiny_run_config["config_dict"], epochs=2, tokenizer_epochs=10, loss_candidates="trained")
    cold = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], dict(config, cold_item_ratio=0.15),
                    verbose=False)
    warm = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    module = cold_prior_module()
    features = os.path.join(ROOT, "tests", "data", "tiny", "tiny.text.npz")
    with pytest.raises(InputError, match="cold_item_ratio 0"):  # the reference must hold nothing out
        module.prior_table(cold, [0.0], content=features, content_weights=[1.0], keep_warm=0.9, warm_reference=cold)
    table = module.prior_table(cold, [0.0], content=features, content_weights=[1.0], keep_warm=0.9,
                               warm_reference=warm)
    rule = table.split("Operating points")[1].split("\n\n")[0]
    assert "0.9 x that of CEMG (ratio 0) with the same content weight" in rule
    levels = [float(v) for v in re.findall(r"(?:alone|content) ([0-9.]+) \(test", rule)]  # valid warm R@10 per weight
    assert len(levels) == 2
    model, data = module.rebuild(warm, held_out=False)
    reference = module.scored(model, data.valid)
    assert levels[0] == pytest.approx(
        module.with_prior(reference, module.rebuild(cold)[1].cold, module.constant_prior(0.0))["warm"], abs=1e-4)
    points = table.split("Operating points")[1].split("\n\n")[1].splitlines()[2:]
    assert len(points) == 2 and min(levels) > 0
    for point in points:  # each point keeps 0.9 x the reference's warm recall with its own content weight
        weight = 1 if "content" in point else 0
        assert float(point.split(" | ")[3]) >= 0.9 * levels[weight] - 1e-4


def test_a_run_without_held_out_items_is_refused():
    with pytest.raises(InputError, match="cold_item_ratio 0"):
        cold_prior_module().rebuild({"model": "CEMG", "dataset": "tiny", "config": {"cold_item_ratio": 0.0}})


def test_a_mixture_gives_every_user_the_same_mass_of_held_out_items_and_keeps_each_part_in_order():
    module = cold_prior_module()
    torch.manual_seed(0)
    cold = torch.zeros(30, dtype=torch.bool)
    cold[19:] = True  # 11 held-out items, 18 trained ones (padding aside)
    scores = torch.log_softmax(torch.randn(6, 30) * 3, dim=1)
    scores[:, 0] = float("-inf")  # padding
    scores[0, 3] = scores[1, 25] = float("-inf")  # history items stay out
    mixed = module.mixture_prior(0.3)(scores, cold)
    assert torch.allclose(mixed.exp()[:, cold].sum(1), torch.full((6,), 0.3))
    assert torch.allclose(mixed.exp()[:, ~cold].sum(1), torch.full((6,), 0.7))
    for part in (cold, ~cold):  # within each part, the run's own order
        assert torch.equal(mixed[:, part].argsort(dim=1, stable=True), scores[:, part].argsort(dim=1, stable=True))
    assert mixed[0, 3] == float("-inf") and mixed[1, 25] == float("-inf") and (mixed[:, 0] == float("-inf")).all()
    targets = torch.tensor([20, 21, 5, 6, 7, 22])
    low, high = (module.with_prior([(scores, targets)], cold, module.mixture_prior(w)) for w in (1e-6, 1 - 1e-6))
    assert low["share"] == 0.0 and high["share"] == 1.0  # each part can fill every list, less the history
    assert high["cold"] == module.among_cold_only([(scores, targets)], cold)


def test_a_mixture_weight_outside_0_1_is_refused():
    module = cold_prior_module()
    with pytest.raises(argparse.ArgumentTypeError, match="strictly between 0 and 1"):
        module.share("1")


def test_the_largest_bias_is_the_most_cold_recall_that_keeps_the_warm_users():
    module = cold_prior_module()
    torch.manual_seed(1)
    cold = torch.zeros(40, dtype=torch.bool)
    cold[30:] = True
    scores = torch.randn(200, 40) * 2 - 3 * cold.float()  # held-out items ranked low, as by a generator
    scores[:, 0] = float("-inf")
    batches = [(scores[:100], torch.randint(1, 40, (100,))), (scores[100:], torch.randint(1, 40, (100,)))]
    recorded = module.with_prior(batches, cold, module.constant_prior(0.0))
    floor = 0.9 * recorded["warm"]
    bias = module.largest_bias(batches, cold, floor)
    kept = module.with_prior(batches, cold, module.constant_prior(bias))
    past = module.with_prior(batches, cold, module.constant_prior(bias + 0.02))
    assert bias > 0 and kept["warm"] >= floor > past["warm"] and kept["cold"] >= recorded["cold"]
    assert module.largest_bias(batches, cold, 0.0) == 64.0  # nothing to keep: every held-out item on top
    assert module.largest_bias(batches, cold, 1.01) is None  # no b keeps more than every warm user
