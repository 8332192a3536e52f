"""The benchmark's comparison protocol on the tiny data set: seeds, per-user results, paired differences against
the reference row, popularity buckets, CEMG's stage-1 model as a row, and baseline ensembles beside the fused row."""

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_CONFIG
from recbole_cemg.cli import compare as compare_cli
from recbole_cemg.cli import run as run_cli
from recbole_cemg.compare import baseline_ensembles, load_runs, merge_runs, summarise
from recbole_cemg.config import Config
from recbole_cemg.evaluation import UserResults, training_item_counts
from recbole_cemg.quick_start import prepare_data, run_score_ensemble
from recbole_cemg.significance import paired_difference

SEEDS = [2020, 2021, 2022]


def run_command(main, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", argv)
    main()


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """cemg-compare with SASRec and CEMG (reading the SASRec of its seed) over three seeds, with score fusion."""
    folder = tmp_path_factory.mktemp("benchmark")
    with pytest.MonkeyPatch.context() as mp:
        run_command(compare_cli.main, [
            "compare.py", "--dataset=tiny", f"--config_files={TINY_CONFIG}", "--models=SASRec,CEMG",
            f"--seeds={','.join(map(str, SEEDS))}", f"--output={folder / 'tiny'}",
            "--set", f"checkpoint_dir={folder / 'saved'}", "epochs=3", "--cemg_set", "score_fusion_weights=[0,0.5,2]"],
            mp)
    with open(folder / "tiny.json", encoding="utf-8") as f:
        return folder, json.load(f)


def test_every_model_runs_once_per_seed_and_rows_show_the_seed_count(benchmark):
    folder, table = benchmark
    runs = table["runs"]
    assert [(r["model"], r["seed"]) for r in runs] == (
        [("SASRec", s) for s in SEEDS] + [("CEMG", s) for s in SEEDS] + [("SASRec + SASRec", s) for s in SEEDS])
    assert all("error" not in r for r in runs)
    for sasrec, cemg in zip(runs[:3], runs[3:6]):  # CEMG read the SASRec of its own seed
        assert cemg["config"]["collab_source"] == sasrec["checkpoint"] and "collaborative" not in cemg
    rows = {e["model"]: e for e in table["summary"]}
    assert list(rows) == ["SASRec", "CEMG", "CEMG + collab score", "SASRec + SASRec"]
    assert all(e["seeds"] == 3 for e in rows.values())
    with open(folder / "tiny.md", encoding="utf-8") as f:
        markdown = f.read()
    assert "| SASRec + SASRec | 3 |" in markdown and " ± " in markdown


def test_per_user_results_are_recbole_s_metrics_user_by_user_and_round_trip(benchmark):
    folder, table = benchmark
    loaded = load_runs(str(folder / "tiny"))
    for stored, run in zip(table["runs"], loaded):
        assert os.path.isfile(folder / stored["per_user"])
        users = run["per_user"]
        assert isinstance(users, UserResults) and len(set(users.users)) == len(users.users) > 50
        for metric, value in run["test_result"].items():
            assert users.metric(metric).mean() == pytest.approx(value, abs=1e-4), (run["model"], metric)
        if run.get("score_fusion"):
            fused = run["score_fusion"]["per_user"]
            assert fused.metric("ndcg@10").mean() == pytest.approx(run["score_fusion"]["test_result"]["ndcg@10"],
                                                                   abs=1e-4)
    # a merge of the written table reproduces its summary, per-user statistics included
    merged = summarise(loaded)
    assert [e["model"] for e in merged] == [e["model"] for e in table["summary"]]
    for mine, theirs in zip(merged, table["summary"]):
        assert mine.get("vs ref ndcg@10") == pytest.approx(theirs.get("vs ref ndcg@10"))
    # a table merged beside the result files it holds (e.g. one built with --ensembles) counts each run once
    twice = merge_runs([str(folder / "tiny"), str(folder / "tiny.json")])
    assert [(r["model"], r["seed"]) for r in twice] == [(r["model"], r["seed"]) for r in loaded]


def test_a_merge_keeps_the_rows_asked_for(benchmark, tmp_path, monkeypatch, capsys):
    folder, _ = benchmark
    run_command(compare_cli.main, ["compare.py", f"--merge={folder / 'tiny'}", "--models=SASRec,SASRec + SASRec",
                                   f"--output={tmp_path / 'kept'}"], monkeypatch)
    with open(tmp_path / "kept.json", encoding="utf-8") as f:
        kept = json.load(f)
    assert [e["model"] for e in kept["summary"]] == ["SASRec", "SASRec + SASRec"]
    assert len(kept["runs"]) == 6
    with pytest.raises(SystemExit):  # a name no run has stops with the names there are, and writes nothing
        run_command(compare_cli.main, ["compare.py", f"--merge={folder / 'tiny'}", "--models=GRU4Rec",
                                       f"--output={tmp_path / 'none'}"], monkeypatch)
    assert "no merged run is named 'GRU4Rec'; the runs are 'CEMG', 'SASRec + SASRec', 'SASRec'." in capsys.readouterr().err
    assert not (tmp_path / "none.json").exists()


def test_a_merge_groups_runs_of_several_names_into_one_row(benchmark, tmp_path, monkeypatch, capsys):
    folder, table = benchmark
    run_command(compare_cli.main, ["compare.py", f"--merge={folder / 'tiny'}", "--group", "any SASRec", "SASRec",
                                   "SASRec + SASRec", "--reference=any SASRec", f"--output={tmp_path / 'grouped'}"],
                monkeypatch)
    with open(tmp_path / "grouped.json", encoding="utf-8") as f:
        rows = {e["model"]: e for e in json.load(f)["summary"]}
    assert list(rows) == ["any SASRec", "CEMG", "CEMG + collab score"]
    sasrecs = [r for r in table["runs"] if r["model"] in ("SASRec", "SASRec + SASRec")]
    assert rows["any SASRec"]["runs"] == 6
    assert rows["any SASRec"]["test ndcg@10"] == pytest.approx(
        sum(r["test_result"]["ndcg@10"] for r in sasrecs) / 6)
    # the paired test reads each user's mean over the group's six runs
    loaded = load_runs(str(folder / "tiny"))
    group = [r["per_user"] for r in loaded if r["model"] in ("SASRec", "SASRec + SASRec")]
    cemg = [r["per_user"] for r in loaded if r["model"] == "CEMG"]
    assert rows["CEMG"]["vs ref ndcg@10"] == pytest.approx(paired_difference(cemg, group, "ndcg@10").mean)
    assert rows["CEMG"]["vs ref ndcg@10"] != pytest.approx(paired_difference(cemg, group[:3], "ndcg@10").mean)
    with pytest.raises(SystemExit):  # a group naming no run stops with the names there are
        run_command(compare_cli.main, ["compare.py", f"--merge={folder / 'tiny'}", "--group", "x", "GRU4Rec",
                                       f"--output={tmp_path / 'none'}"], monkeypatch)
    assert "--group x: no merged run is named 'GRU4Rec'" in capsys.readouterr().err
    assert not (tmp_path / "none.json").exists()


def test_rows_are_paired_against_the_first_baseline(benchmark):
    _, table = benchmark
    rows = {e["model"]: e for e in table["summary"]}
    assert "vs ref ndcg@10" not in rows["SASRec"]
    for name in ("CEMG", "CEMG + collab score", "SASRec + SASRec"):
        entry = rows[name]
        assert entry["reference"] == "SASRec"
        for metric in ("ndcg@10", "recall@10"):
            # every seed tests the same users: the mean paired difference is the difference of the means
            assert entry[f"vs ref {metric}"] == pytest.approx(
                entry[f"test {metric}"] - rows["SASRec"][f"test {metric}"], abs=2e-4)
            assert entry[f"vs ref {metric} low"] <= entry[f"vs ref {metric}"] <= entry[f"vs ref {metric} high"]
            verdict = entry[f"vs ref {metric} verdict"]
            assert verdict == ("win" if entry[f"vs ref {metric} low"] > 0 else
                               "loss" if entry[f"vs ref {metric} high"] < 0 else "tie")


def test_the_ensemble_fuses_two_seeds_with_the_weight_chosen_on_valid(benchmark):
    _, table = benchmark
    sasrec = {r["seed"]: r for r in table["runs"] if r["model"] == "SASRec"}
    for run in (r for r in table["runs"] if r["model"] == "SASRec + SASRec"):
        partner = SEEDS[(SEEDS.index(run["seed"]) + 1) % 3]
        assert run["ensemble_of"] == [sasrec[run["seed"]]["checkpoint"], sasrec[partner]["checkpoint"]]
        valid = {float(w): v for w, v in run["valid_by_weight"].items()}
        assert set(valid) == {0.0, 0.5, 2.0} and run["fusion_weight"] == max(valid, key=valid.get)
        # weight 0 is the first model alone: its validation score is that run's own best
        assert valid[0.0] == pytest.approx(sasrec[run["seed"]]["best_valid_result"]["ndcg@10"], abs=1e-4)
        assert len(set(valid.values())) > 1  # the second model's scores change the ranking


def test_ensembles_are_built_from_runs_whose_row_names_are_labels(benchmark, monkeypatch):
    """A merged run's row name may be a label such as history_items.py's ``SASRec [history masked]``: which runs are
    baselines to ensemble is read from their recorded model, not parsed from the name."""
    folder, _ = benchmark
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    runs = [r for r in load_runs(str(folder / "tiny")) if not r.get("ensemble_of")]
    labelled = [{**r, "model": f"{r['model']} [history masked]"} if r["model"] == "SASRec" else r for r in runs]
    ensembles = baseline_ensembles(labelled[:2] + labelled[3:4], "tiny", [TINY_CONFIG], {})
    assert [e["model"] for e in ensembles] == ["SASRec [history masked] + SASRec [history masked]"] * 2
    assert ensembles[0]["ensemble_of"] == [runs[0]["checkpoint"], runs[1]["checkpoint"]]


def test_popularity_buckets_reach_the_csv(benchmark):
    folder, table = benchmark
    with open(folder / "tiny.csv", encoding="utf-8") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    shares = [float(rows["CEMG"][f"popularity {b} share"]) for b in ("0", "1-4", "5-9", "10-19", "20+")]
    assert sum(shares) == pytest.approx(1.0)
    # same split for every model, so the same users per bucket
    assert shares == [float(rows["SASRec"][f"popularity {b} share"]) for b in ("0", "1-4", "5-9", "10-19", "20+")]


def test_training_counts_are_the_training_split_s_interactions(tiny_run_config):
    """Counted independently from the raw atomic file: each user's interactions in time order but the last two
    (the validation and test targets of the leave-one-out split)."""
    import pandas as pd

    config = Config(model="SASRec", dataset="tiny", config_file_list=tiny_run_config["config_file_list"],
                    config_dict=tiny_run_config["config_dict"])
    data = prepare_data(config)
    dataset = data.train._dataset
    raw = pd.read_csv(os.path.join(ROOT, "tests", "data", "tiny", "tiny.inter"), sep="\t", dtype=str)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw["timestamp"] = raw["timestamp"].astype(float)
    ordered = raw.sort_values(["user_id", "timestamp"], kind="stable")
    training = ordered.groupby("user_id", group_keys=False).apply(lambda rows: rows.iloc[:-2])
    expected = torch.zeros(dataset.item_num, dtype=torch.long)
    for token, count in training["item_id"].value_counts().items():
        expected[dataset.field2token_id["item_id"][token]] = count
    assert torch.equal(training_item_counts(dataset), expected)
    cold = torch.zeros(dataset.item_num, dtype=torch.bool)
    cold[[1, 2]] = True
    assert training_item_counts(dataset, cold)[[1, 2]].tolist() == [0, 0]


def test_run_compare_adds_cemg_s_stage_one_model_and_its_ensemble(tmp_path, monkeypatch):
    """run_cemg --compare trains CEMG's own stage 1: its SASRec gets a row, and two seeds of it an ensemble. Under
    ``mask_history`` every row, the ensemble's included, is ranked and recorded under that protocol, so the table
    (which refuses to mix protocols) is written."""
    output = tmp_path / "own"
    run_command(run_cli.main, [
        "run_cemg.py", "--dataset=tiny", f"--config_files={TINY_CONFIG}", "--compare=CEMG", "--seeds=2020,2021",
        f"--output={output}", f"--checkpoint_dir={tmp_path / 'saved'}", "--epochs=2", "--collab_epochs=2",
        "--score_fusion_weights=[0,1]", "--mask_history=True"], monkeypatch)
    with open(f"{output}.json", encoding="utf-8") as f:
        table = json.load(f)
    names = [e["model"] for e in table["summary"]]
    stage1 = "SASRec (stage 1 of CEMG)"
    assert names == ["CEMG", "CEMG + collab score", stage1, f"{stage1} + {stage1}"]
    cemg = table["runs"][0]
    assert cemg["collaborative"]["checkpoint"].endswith(".collab.pth")
    assert cemg["collaborative"]["parameters"] < cemg["parameters"]
    rows = {e["model"]: e for e in table["summary"]}
    assert rows["CEMG"]["reference"] == stage1  # the first baseline of this table: the SASRec CEMG reads
    stored = table["runs"][0]["collaborative"]
    users = UserResults.read(os.path.join(tmp_path, stored["per_user"]))
    assert users.metric("ndcg@10").mean() == pytest.approx(stored["test_result"]["ndcg@10"], abs=1e-4)
    assert rows[f"{stage1} + {stage1}"]["seeds"] == 2
    assert all(run["config"]["mask_history"] is True for run in table["runs"])
    # the ensemble again, in memory (the top lists are not written): the same ranks, and no history item on top
    stored = next(run for run in load_runs(str(output)) if run.get("ensemble_of"))
    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
    overrides = {"seed": stored["seed"], "mask_history": True}
    ensemble = run_score_ensemble("SASRec", "tiny", stored["ensemble_of"], [0, 1], [TINY_CONFIG], overrides)
    assert np.array_equal(ensemble["per_user"].ranks, stored["per_user"].ranks)
    test = prepare_data(Config(model="SASRec", dataset="tiny", config_file_list=[TINY_CONFIG])).test
    histories = [{int(i) for i in row if i > 0} for interaction, *_ in test for row in interaction["item_id_list"]]
    assert any(histories) and len(histories) == len(ensemble["per_user"].top)
    for top, items in zip(ensemble["per_user"].top, histories):
        assert not set(top.tolist()) & items


def test_seeds_must_be_integers(stops_with, monkeypatch):
    with stops_with(r"--seeds=1,abc: give comma-separated integers"):
        run_command(run_cli.main, ["run_cemg.py", "--dataset=tiny", "--compare=SASRec", "--seeds=1,abc"], monkeypatch)
