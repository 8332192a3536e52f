"""run_cemg.py as a user runs it: a subprocess on the tiny data set, results in a JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recbole_cemg.evaluation import UserResults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "run_cemg.py")
METRICS = {f"{m}@{k}" for m in ("recall", "ndcg", "hit") for k in (5, 10)}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def run_tiny(tmp_path, model: str, *extra: str) -> dict:
    result_file = tmp_path / "r.json"
    process = run_script(f"--model={model}", "--dataset=tiny", "--config_files=tests/data/tiny.yaml",
                         f"--checkpoint_dir={tmp_path / 'saved'}", f"--result_file={result_file}", *extra)
    assert process.returncode == 0, process.stderr[-4000:]
    with open(result_file, encoding="utf-8") as f:
        result = json.load(f)
    # the result, its per-user results beside it, and no temporary file left behind
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.users.tsv.gz", "saved"]
    return result


def check_common(result: dict, model: str, tmp_path) -> None:
    assert result["model"] == model and result["dataset"] == "tiny"
    for name in ("best_valid_result", "test_result"):
        assert set(result[name]) == METRICS, result[name]
        assert all(0.0 <= v <= 1.0 for v in result[name].values())
    assert {"data", "train", "test"} <= set(result["seconds"])
    assert result["peak_memory"]["cpu_rss_mib"] > 0
    assert result["machine"]["cpu"] and result["machine"]["device"] == "cpu"
    assert isinstance(result["parameters"], int) and result["parameters"] > 0
    checkpoint = result["checkpoint"]
    assert os.path.dirname(checkpoint) == str(tmp_path / "saved") and os.path.isfile(checkpoint)
    assert result["per_user"] == "r.users.tsv.gz"
    users = UserResults.read(str(tmp_path / "r.users.tsv.gz"))
    assert len(users.users) == 120  # every test user of the tiny data set, once
    assert users.metric("ndcg@10").mean() == pytest.approx(result["test_result"]["ndcg@10"], abs=1e-4)


def test_run_script_sasrec(tmp_path):
    result = run_tiny(tmp_path, "SASRec", "--epochs=3")
    check_common(result, "SASRec", tmp_path)
    assert "tokenizer" not in result and "decoding" not in result


def test_run_script_cemg(tmp_path):
    result = run_tiny(tmp_path, "CEMG", "--epochs=2", "--tokenizer_epochs=20", "--collab_epochs=2")
    check_common(result, "CEMG", tmp_path)
    assert {"collaborative", "tokenizer", "generator"} <= set(result["seconds"])
    tokenizer = result["tokenizer"]
    assert tokenizer["items"] == 60 and tokenizer["unique_after_dedup"] == 60
    assert tokenizer["collisions"] == 60 - tokenizer["unique_before_dedup"] >= 0
    assert len(tokenizer["usage"]) == 3 and all(0 < u <= 1 for u in tokenizer["usage"])
    decoding = result["decoding"]
    assert decoding["beams"] == 12 and decoding["users"] == 120
    assert decoding["users_per_second"] > 0
    assert decoding["invalid_share"] == 0 and decoding["repeated_share"] == 0
    stem = os.path.splitext(result["checkpoint"])[0]
    assert os.path.isfile(stem + ".codes.json") and os.path.isfile(stem + ".codes.png")


def test_run_script_unknown_model(tmp_path):
    process = run_script("--model=Nope", "--dataset=tiny", "--config_files=tests/data/tiny.yaml",
                         f"--checkpoint_dir={tmp_path / 'saved'}", f"--result_file={tmp_path / 'r.json'}")
    assert process.returncode != 0
    assert "Nope" in process.stderr
    assert not (tmp_path / "r.json").exists()
