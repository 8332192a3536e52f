"""Side-by-side comparison and hyper-parameter search through RecBole's HyperTuning."""

import csv
import json
import sys

import pytest

import run_hyper
from recbole_cemg.compare import compare_models, parse_variant, split_models, summarise, write_outputs


def test_variants_parse_into_a_model_and_overrides():
    assert parse_variant("SASRec") == ("SASRec", {})
    assert parse_variant("CEMG[fusion=concat; modalities=[]; align_weight=0.5]") == (
        "CEMG", {"fusion": "concat", "modalities": [], "align_weight": 0.5})
    assert split_models("SASRec, CEMG[modalities=[text,image];fusion=mean],GRU4Rec") == [
        "SASRec", "CEMG[modalities=[text,image];fusion=mean]", "GRU4Rec"]
    assert parse_variant("CEMG[modalities=[text,image]]")[1] == {"modalities": ["text", "image"]}
    with pytest.raises(ValueError, match="must end with"):
        parse_variant("CEMG[fusion=concat")
    with pytest.raises(ValueError, match="not key=value"):
        parse_variant("CEMG[concat]")


def test_comparison_writes_every_output_and_survives_a_failing_model(tiny_run_config, tmp_path):
    overrides = dict(tiny_run_config["config_dict"], epochs=2)
    gru = "GRU4Rec[hidden_size=32;embedding_size=32]"  # a configuration variant is a row of its own
    rows = compare_models(["SASRec", "NoSuchModel", gru], "tiny", tiny_run_config["config_file_list"],
                          overrides, seeds=[2020, 2021])
    assert [r["model"] for r in rows] == ["SASRec", "SASRec", "NoSuchModel", "NoSuchModel", gru, gru]
    assert [r["seed"] for r in rows[:2]] == [2020, 2021] and rows[4]["config"]["model"] == "GRU4Rec"
    assert rows[4]["config"]["hidden_size"] == 32 and rows[0]["config"]["hidden_size"] == 64
    assert "NoSuchModel" in rows[2]["error"]
    summary = summarise(rows)
    by_model = {e["model"]: e for e in summary}
    assert by_model["NoSuchModel"]["failed"] == 2 and "error" in by_model["NoSuchModel"]
    sasrec = by_model["SASRec"]
    recalls = [r["test_result"]["recall@10"] for r in rows[:2]]
    assert sasrec["test recall@10"] == pytest.approx(sum(recalls) / 2)
    assert sasrec["test recall@10 std"] >= 0 and sasrec["parameters"] > 0

    paths = write_outputs(rows, summary, str(tmp_path / "out" / "tiny"))
    with open(paths[0], encoding="utf-8") as f:
        assert len(json.load(f)["runs"]) == 6
    with open(paths[1], encoding="utf-8") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["SASRec", "NoSuchModel", gru]
    with open(paths[2], encoding="utf-8") as f:
        table = f.read()
    assert "| SASRec |" in table and "failed: InputError" in table and "Machine:" in table
    with open(paths[3], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_comparison_with_a_failed_run_writes_its_table_and_exits_1(tiny_run_config, tmp_path, monkeypatch):
    from recbole_cemg.cli.compare import main
    output = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["cemg-compare", "--models=NoSuchModel", "--dataset=tiny", f"--output={output}",
                                      f"--config_files={tiny_run_config['config_file_list'][0]}",
                                      "--seeds=2020", "--set", f"checkpoint_dir={tmp_path / 'saved'}"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert isinstance(stopped.value.code, str)  # a message: exit status 1
    assert "1 run(s) failed" in stopped.value.code and "NoSuchModel (seed 2020): InputError" in stopped.value.code
    assert "failed: InputError" in (tmp_path / "out.md").read_text()  # the table was written first


@pytest.mark.parametrize("algo", ["exhaustive", "random"])
def test_hyper_parameter_search_exports_trials_and_best(tiny_run_config, tmp_path, monkeypatch, algo):
    output = str(tmp_path / f"hyper-{algo}")
    monkeypatch.setattr(sys, "argv", [
        "run_hyper.py", "--model=SASRec", "--dataset=tiny", f"--config_files={tiny_run_config['config_file_list'][0]}",
        "--params_file=hyper/tiny.hyper", f"--output_file={output}", f"--algo={algo}", "--max_evals=2",
        f"--checkpoint_dir={tmp_path / 'saved'}", "--epochs=1"])
    run_hyper.main()
    with open(f"{output}.json", encoding="utf-8") as f:
        trials = json.load(f)["trials"]
    assert 1 <= len(trials) <= 2 and all("test_result" in t for t in trials)
    if algo == "exhaustive":  # both learning rates of hyper/tiny.hyper, each once
        assert sorted(t["params"] for t in trials) == ["learning_rate:0.005", "learning_rate:0.01"]
    with open(f"{output}.best.json", encoding="utf-8") as f:
        best = json.load(f)
    assert best["best_valid_score"] == max(t["best_valid_score"] for t in trials)
    with open(output, encoding="utf-8") as f:
        assert "Valid result" in f.read()
