"""A user's mistake (a bad value, a missing or malformed file) ends a command with one clear line and exit code 2,
before any training; ``--debug`` shows the traceback. The config schema beside CEMG.yaml and its checker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from recbole_cemg.config import Config
from recbole_cemg.data.atomic import check_atomic_file
from recbole_cemg.errors import InputError
from recbole_cemg.model.fusion import FUSION_MODES
from recbole_cemg.schema import PROPERTIES_DIR, check_config, describe, schema
from tests.conftest import ROOT

TINY = ["--dataset=tiny", "--config_files=tests/data/tiny.yaml"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_user_error(process: subprocess.CompletedProcess, *names: str) -> str:
    """Exit code 2, one ``error:`` line naming each of ``names``, no traceback."""
    output = process.stdout + process.stderr
    assert process.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    line = next(line for line in process.stderr.splitlines() if "error: " in line)
    assert all(name in line for name in names), line
    return line


def run_tiny(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return run("run_cemg.py", *TINY, f"--checkpoint_dir={tmp_path / 'saved'}", *args)


def broken_tiny(tmp_path, line: int, row: str) -> str:
    """A copy of the tiny data set whose ``tiny.inter`` has ``row`` as line ``line``; returns its data_path."""
    shutil.copytree(os.path.join(ROOT, "tests", "data", "tiny"), tmp_path / "data" / "tiny")
    inter = tmp_path / "data" / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines()
    lines[line - 1] = row
    inter.write_text("\n".join(lines) + "\n")
    return str(tmp_path / "data")


# ---------------------------------------------------------------------------------------- the reported cases
def test_feature_files_written_the_yaml_way_reach_the_feature_loader(tmp_path):
    line = assert_user_error(run_tiny(tmp_path, "--feature_files={text: /nowhere/f.npz}"), "/nowhere/f.npz")
    assert "Feature file not found" in line


def test_unparsable_timestamp_names_file_and_line(tmp_path):
    data_path = broken_tiny(tmp_path, 5, "u1\ti3\tyesterday")
    line = assert_user_error(run_tiny(tmp_path, f"--data_path={data_path}"), "tiny.inter:5", "timestamp",
                             "'yesterday'")
    assert "not a number" in line


def test_short_row_names_file_and_line(tmp_path):
    data_path = broken_tiny(tmp_path, 7, "u1\ti3")
    assert_user_error(run_tiny(tmp_path, f"--data_path={data_path}"), "tiny.inter:7", "2 cells", "3 fields")


def test_truncated_codes_file_is_named(tmp_path):
    codes = tmp_path / "run.codes.json"
    codes.write_text('{"level_sizes": [16, 16, 16], "codes": {"i1": [1, 2')
    line = assert_user_error(run_tiny(tmp_path, f"--tokenizer_path={codes}"), str(codes), "not valid JSON")
    assert "tokenizer_path" in line


def test_learning_rate_that_is_not_a_number(tmp_path):
    line = assert_user_error(run_tiny(tmp_path, "--learning_rate=abc"), "`learning_rate`", "'abc'")
    assert "a number > 0" in line


def test_negative_epochs_are_refused(tmp_path):
    line = assert_user_error(run_tiny(tmp_path, "--epochs=-1"), "`epochs`", "-1")
    assert "an integer >= 1" in line


def test_missing_config_file_is_named(tmp_path):
    assert_user_error(run("run_cemg.py", "--dataset=tiny", "--config_files=missing.yaml"), "missing.yaml",
                      "config file not found")


def test_debug_shows_the_traceback(tmp_path):
    process = run_tiny(tmp_path, "--epochs=-1", "--debug")
    assert process.returncode != 0 and "Traceback" in process.stderr and "InputError" in process.stderr


def test_run_hyper_missing_params_file():
    assert_user_error(run("run_hyper.py", "--params_file=nowhere.hyper"), "nowhere.hyper", "params file not found")


def test_dataset_script_missing_input(tmp_path):
    missing = tmp_path / "reviews_Beauty_5.json.gz"
    line = assert_user_error(run("dataset_scripts/convert_amazon.py", "--reviews", str(missing), "--out",
                                 str(tmp_path / "out")), str(missing))
    assert line.startswith("convert_amazon: error: Review file not found")


# ------------------------------------------------------------------- runs that exited 0 or with a traceback
def tiny_with_histories(tmp_path, per_user: int) -> str:
    """A copy of the tiny data set keeping each user's first ``per_user`` interactions (0: the header only)."""
    folder = tmp_path / "data" / "tiny"
    shutil.copytree(os.path.join(ROOT, "tests", "data", "tiny"), folder)
    header, *rows = (folder / "tiny.inter").read_text().splitlines()
    kept, seen = [], {}
    for row in rows:
        user = row.split("\t")[0]
        seen[user] = seen.get(user, 0) + 1
        if seen[user] <= per_user:
            kept.append(row)
    (folder / "tiny.inter").write_text("\n".join([header, *kept]) + "\n")
    return str(tmp_path / "data")


@pytest.mark.parametrize("per_user, expected", [(0, "no interaction rows"), (1, "no user has the 3 interactions"),
                                                (2, "no user has the 3 interactions")])
def test_data_too_small_for_the_split_stops(tmp_path, per_user, expected):
    data_path = tiny_with_histories(tmp_path, per_user)
    line = assert_user_error(run_tiny(tmp_path, f"--data_path={data_path}", "--feature_unknown_items=ignore"), "tiny")
    assert expected in line


@pytest.mark.parametrize("flag, names", [
    ("--nproc=0", ["--nproc=0"]),
    ("--cold_item_ratio=0.99", ["`cold_item_ratio`", "<= 0.5"]),
    ("--train_stride=25", ["`train_stride`", "MAX_ITEM_LIST_LENGTH"]),
    ("--topk=[10,100]", ["`topk`", "only 60 items"]),
    ("--lora={r: 8, lora_alpa: 16}", ["`lora`", "'lora_alpa' is not a LoRA setting"]),
    ("--tokenizer_path=x.codes.json", ["`joint_weight`", "tokenizer_path"]),
    ("--epochs=2", ["--epochs=3", "Give each --key=value once"]),
])
def test_invalid_run_settings_stop(tmp_path, flag, names):
    extra = {"--topk=[10,100]": ["--num_beams=100"], "--lora={r: 8, lora_alpa: 16}": ["--llm_path=gpt2"],
             "--tokenizer_path=x.codes.json": ["--joint_weight=0.1"], "--epochs=2": ["--epochs=3"]}.get(flag, [])
    assert_user_error(run_tiny(tmp_path, flag, *extra), *names)


def test_checkpoint_dir_under_a_file_stops_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "saved"
    line = assert_user_error(run("run_cemg.py", *TINY, f"--checkpoint_dir={folder}"), "`checkpoint_dir`", str(folder))
    assert "cannot write there" in line


def test_llm_path_without_a_model_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    line = assert_user_error(run_tiny(tmp_path, f"--llm_path={tmp_path / 'empty'}"), str(tmp_path / "empty"))
    assert "no config.json" in line


def test_seeds_that_are_not_integers(tmp_path):
    assert_user_error(run_tiny(tmp_path, "--compare=SASRec", "--seeds=1,abc"), "--seeds=1,abc")


@pytest.mark.parametrize("script, args", [
    ("benchmarks/compare.py", ["--models=SASRec,CEMG[nonexistent_key=1]", "--data_path=tests/data"]),
    ("run_cemg.py", ["--compare=SASRec,CEMG[nonexistent_key=1]"]),
])
def test_variant_key_typo_stops_the_comparison_before_any_training(tmp_path, script, args):
    output = [f"--output={tmp_path / 'out'}"] if script.startswith("benchmarks") else []
    line = assert_user_error(run(script, *TINY, *args, *output), "'nonexistent_key'", "CEMG")
    assert "not a config key" in line and not (tmp_path / "out.json").exists()


def test_hyper_line_with_a_key_typo_stops(tmp_path):
    params = tmp_path / "typo.hyper"
    params.write_text("learning_rate choice [0.01]\ncodebok_size choice [4,8]\n")
    line = assert_user_error(run("run_hyper.py", "--model=CEMG", *TINY, f"--params_file={params}",
                                 f"--output_file={tmp_path / 'h'}"), f"{params}:2", "'codebok_size'")
    assert "not a config key" in line


# ------------------------------------------------------------------------------------------------- the schema
def defaults() -> dict:
    merged = {}
    for path in (os.path.join(PROPERTIES_DIR, "overall.yaml"), os.path.join(PROPERTIES_DIR, "model", "CEMG.yaml")):
        with open(path, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f))
    return merged


def test_every_default_has_a_rule_and_satisfies_it():
    config = defaults()
    assert not set(config) - set(schema("CEMG")), "a key of CEMG.yaml / overall.yaml without a line in a schema"
    check_config(config, "CEMG")
    assert schema("CEMG")["fusion"]["choices"] == list(FUSION_MODES)


def test_a_good_config_passes_and_yaml_strings_become_dicts(tiny_run_config, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_cemg.py", "--feature_files={text: tests/data/tiny/tiny.text.npz}",
                                      "--modalities=[text]", "--topk=5,10"])
    config = Config("CEMG", "tiny", **tiny_run_config)
    assert config["feature_files"] == {"text": "tests/data/tiny/tiny.text.npz"}
    assert config["modalities"] == ["text"] and config["topk"] == [5, 10]


@pytest.mark.parametrize("key, value, expected", [
    ("learning_rate", "abc", "expected a number > 0"),
    ("learning_rate", 0, "expected a number > 0"),
    ("epochs", -1, "expected an integer >= 1"),
    ("epochs", True, "expected an integer >= 1"),
    ("epochs", None, "expected an integer >= 1"),
    ("fusion", "attention", "expected one of guided, concat, mean"),
    ("rqvae_hidden_dims", [32, "x"], "expected a list of integers >= 1"),
    ("feature_files", "[text", "expected a mapping"),
    ("rqvae_dropout", 1.0, "expected a number >= 0 and < 1"),
    ("topk", [5, 0], "expected an integer or a list of integers >= 1"),
    ("num_beams", 5, "must be at least the largest topk (10)"),
    ("lora", {"r": 8}, "LoRA needs a pretrained model in `llm_path`"),
    ("distill_weight", 1.5, "expected a number >= 0 and <= 1"),
])
def test_each_violation_names_the_key_and_what_is_expected(key, value, expected):
    config = dict(defaults(), **{key: value})
    with pytest.raises(InputError, match=f"config `{key}` = .*{re.escape(expected)}"):
        check_config(config, "CEMG")


@pytest.mark.parametrize("settings, key, expected", [
    ({"code_transition": True, "generator_input": "tokens"}, "code_transition", "set generator_input: items"),
    ({"transition_scope": "tuple"}, "transition_scope", "set code_transition: True, or transition_scope: level"),
    ({"transition_items": 3}, "transition_items", "set code_transition: True, or transition_items: 1"),
    ({"residual_item_embedding": True, "generator_input": "tokens"}, "residual_item_embedding",
     "set generator_input: items"),
    ({"loss_candidates": "trained", "code_loss": "levels"}, "loss_candidates", "code_loss: items or views"),
    ({"loss_mask_history": True, "code_loss": "levels"}, "loss_mask_history", "code_loss: items or views"),
    ({"code_mixer": 64, "code_loss": "levels"}, "code_mixer", "code_loss: items or views (per-level softmaxes"),
    ({"code_loss": "views"}, "code_loss", "set tokenizer_views: 2 (or more), or code_loss: items"),
    ({"codeword_projection": True, "code_loss": "levels"}, "codeword_projection", "code_loss: items"),
    ({"codeword_projection": True, "tokenizer_path": "run.codes.json"}, "codeword_projection",
     "a codes file (`tokenizer_path`) has none"),
    ({"cold_simulation": 0.5, "modalities": []}, "cold_simulation", "list content modalities"),
    ({"cold_target_simulation": 0.2, "residual_item_embedding": True, "modalities": ["text"]},
     "cold_target_simulation", "the pure item-level generator with fixed codes: set residual_item_embedding: False; "
     "or set cold_target_simulation: 0."),
    ({"cold_target_simulation": 0.2, "modalities": [], "joint_weight": 0.1}, "cold_target_simulation",
     "list content modalities, set joint_weight: 0;"),
    ({"cold_target_levels": 4, "codebook_levels": 3}, "cold_target_levels", "above codebook_levels (3)"),
    ({"view_levels": 4, "codebook_levels": 3}, "view_levels", "above codebook_levels (3)"),
    ({"collab_view_size": 2048}, "collab_view_size", "the collaborative view, which is off: set collab_view: True"),
    ({"collab_view": True, "collab_view_levels": 1, "code_loss": "views", "view_levels": 4, "codebook_levels": 8},
     "code_loss", "equal shares of 4 levels"),
    ({"view_levels": 2, "codebook_levels": 4, "quantizer": "product"}, "view_levels",
     "not coarse to fine"),
    ({"quantizer": "product", "codebook_levels": 3, "rqvae_latent_dim": 32}, "quantizer",
     "set rqvae_latent_dim (32) to a multiple of it"),
    ({"distill_weight": 0.5, "generator_input": "tokens"}, "distill_weight",
     "distillation needs the item-level generator (generator_input: items)"),
    ({"distill_weight": 0.5, "collab_source": "sasrec.collab.npz"}, "distill_weight",
     "distillation needs the collaborative model itself"),
])
def test_settings_that_do_not_fit_together_name_the_key(settings, key, expected):
    with pytest.raises(InputError, match=f"config `{key}` = .*{re.escape(expected)}"):
        check_config(dict(defaults(), **settings), "CEMG")


def test_rules_read_as_words():
    assert describe({"type": "str", "nullable": True}) == "a string, or ~ (none)"
    assert describe({"type": ["str", "list"], "of": "str"}) == "a string or a list of strings"


# ----------------------------------------------------------------------------------------------- atomic files
@pytest.mark.parametrize("content, message", [
    ("user_id:token\titem_id\n", r"x.inter:1: header field 'item_id' is not name:type"),
    ("user_id:token\titem_id:token\n", r"x.inter:1: no field timestamp, which `load_col` lists"),
    ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n\nu\ti\t2\tx\n", r"x.inter:4: 4 cells"),
    ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t\nu\ti\t1e3x\n", r"x.inter:3: field 'timestamp'"),
])
def test_atomic_file_problems_name_the_line(tmp_path, content, message):
    path = tmp_path / "x.inter"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        check_atomic_file(str(path), load={"user_id", "item_id", "timestamp"})


def test_unloaded_float_fields_are_not_parsed(tmp_path):
    path = tmp_path / "x.item"
    path.write_text("item_id:token\tprice:float\tvec:float_seq\ni1\tn/a\t1 2 3\n")
    check_atomic_file(str(path), load={"item_id", "vec"})
    with pytest.raises(InputError, match="x.item:2: field 'price'"):
        check_atomic_file(str(path))
