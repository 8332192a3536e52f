"""No run writes over a file it did not create, and no file of other data is read into a run.

Checkpoint names are unique per run; ``--resume`` takes only a run's own checkpoint path of the same model and data;
``collab_source``, ``tokenizer_path`` and ``--resume`` refuse files made from other data (another data set with as
many items, or a run that trained on the items this run holds out); a checkpoint of unknown origin is read without
running its code. Through the real command, on the tiny data set, from one finished CEMG run and one SASRec run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from recbole_cemg.checkpoints import check_origin, read_checkpoint, unique_checkpoint_path
from recbole_cemg.errors import InputError
from recbole_cemg.resume import interrupted_run
from tests.conftest import ROOT, assert_metrics_agree, assert_weights_agree, load_script
from tests.test_user_errors import TINY, assert_user_error, run

# Short stages: these tests look at files and decisions, not at quality.
FAST = {"collab_epochs": 3, "tokenizer_epochs": 10, "epochs": 3, "stopping_step": 10}


def fast(**changes) -> list[str]:
    """``FAST`` with ``changes``, as command-line flags (RecBole refuses a flag given twice)."""
    return [f"--{key}={value}" for key, value in dict(FAST, **changes).items()]


def finished_run(folder, *args: str, **changes) -> dict:
    process = run("run_cemg.py", *TINY, *fast(**changes), f"--checkpoint_dir={folder / 'saved'}",
                  f"--result_file={folder / 'result.json'}", *args)
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    return json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="module")
def cemg_run(tmp_path_factory) -> str:
    """The checkpoint path of a finished CEMG run (its stem names every file of the run)."""
    return finished_run(tmp_path_factory.mktemp("cemg"))["checkpoint"]


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory) -> str:
    return finished_run(tmp_path_factory.mktemp("sasrec"), "--model=SASRec")["checkpoint"]


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> str:
    """The tiny data set with two items' interactions swapped: as many items, other training pairs."""
    folder = tmp_path_factory.mktemp("other") / "tiny"
    shutil.copytree(os.path.join(ROOT, "tests", "data", "tiny"), folder)
    inter = folder / "tiny.inter"
    swapped = {"i1": "i2", "i2": "i1"}
    lines = inter.read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    inter.write_text("\n".join([lines[0]] + ["\t".join([u, swapped.get(i, i), t]) for u, i, t in rows]) + "\n")
    return str(folder.parent)


def digests(folder: str) -> dict[str, str]:
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, name))}


def stem(checkpoint: str) -> str:
    return os.path.splitext(checkpoint)[0]


# ------------------------------------------------------------------------------------------------ names
def test_checkpoint_names_are_unique_per_run(cemg_run, sasrec_run, tmp_path):
    for path, model in ((cemg_run, "CEMG"), (sasrec_run, "SASRec")):
        assert re.fullmatch(model + r"-\w{3}-\d\d-\d{4}_\d\d-\d\d-\d\d-[0-9a-f]{6}\.pth", os.path.basename(path))
    same_second = str(tmp_path / "CEMG-Dec-01-2026_09-10-11.pth")
    taken = unique_checkpoint_path(same_second)
    open(stem(taken) + ".codes.json", "w").close()  # a run that so far wrote only its codes still owns the name
    names = {unique_checkpoint_path(same_second) for _ in range(30)}
    assert len(names) == 30 and taken not in names


# ------------------------------------------------------------------------------------------------ --resume
@pytest.mark.parametrize("suffix", [".codes.json", ".resume.pth", ".collab.pth", ".collab.resume.pth",
                                    ".collab.npz"])
def test_resume_takes_only_the_runs_own_checkpoint_path(cemg_run, suffix):
    with pytest.raises(InputError, match=f"{re.escape(suffix)}' is not a run's checkpoint path"):
        interrupted_run(stem(cemg_run) + suffix, config=None)  # refused before the config is read


def test_resume_from_a_runs_other_file_writes_nothing_over(cemg_run, tmp_path):
    """Through the command: resuming from the run's resume state (the file resuming writes) stops, files intact."""
    folder = os.path.dirname(cemg_run)
    before = digests(folder)
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), f"--checkpoint_dir={tmp_path}",
                                 f"--resume={stem(cemg_run)}.resume.pth"), ".resume.pth")
    assert "not a run's checkpoint path" in line
    assert digests(folder) == before


def test_resume_of_another_model_is_refused(cemg_run, tmp_path):
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), "--model=SASRec", f"--resume={cemg_run}"), "resume")
    assert "a run of CEMG" in line


def test_resume_on_other_data_is_refused(sasrec_run, other_data):
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), "--model=SASRec", f"--data_path={other_data}",
                                 f"--resume={sasrec_run}"), sasrec_run)
    assert "other data" in line


def test_a_weights_only_copy_stands_for_the_training_checkpoint(sasrec_run, tmp_path):
    """``benchmarks/weights_only.py``, what the CPU benchmark commits of each SASRec for later sessions: the config and
    weights without the optimizer state; a CEMG run reads it as ``collab_source`` as it reads the original, and the
    SASRec's result file then names the copy (what ``compare.py --merge --ensembles`` builds ensembles from)."""
    result_file = tmp_path / "sasrec.json"
    shutil.copy(os.path.join(os.path.dirname(os.path.dirname(sasrec_run)), "result.json"), result_file)
    copy = str(tmp_path / "sasrec.pth")
    load_script("weights_only", "benchmarks").main(sasrec_run, copy, str(result_file))
    assert json.loads(result_file.read_text())["checkpoint"] == copy
    original, exported = (torch.load(path, weights_only=False) for path in (sasrec_run, copy))
    assert set(exported) == {"config", "state_dict"} and "optimizer" in original
    assert_weights_agree(exported["state_dict"], original["state_dict"], atol=0)
    runs = [finished_run(tmp_path / name, f"--collab_source={source}")
            for name, source in (("from_copy", copy), ("from_original", sasrec_run))]
    assert_metrics_agree(runs[0], runs[1])


def test_resume_of_a_finished_run_with_more_epochs_trains_on(cemg_run, tmp_path):
    folder = tmp_path / "saved"
    shutil.copytree(os.path.dirname(cemg_run), folder)
    checkpoint = str(folder / os.path.basename(cemg_run))
    process = run("run_cemg.py", *TINY, *fast(epochs=5), f"--checkpoint_dir={folder}", f"--resume={checkpoint}",
                  "--state=INFO")
    log = process.stdout + process.stderr
    assert process.returncode == 0, log[-3000:]
    assert "training continues to epoch 4" in log and re.search(r"epoch 4 training", log)
    assert torch.load(stem(checkpoint) + ".resume.pth", weights_only=True)["epoch"] == 4


# ----------------------------------------------------------------------------------- files of the same data
def test_tokenizer_path_reuses_the_codes_and_still_trains_the_collaborative_model(cemg_run, tmp_path):
    result = finished_run(tmp_path, f"--tokenizer_path={stem(cemg_run)}.codes.json", "--score_fusion_weights=[0,1]")
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    reused = torch.load(cemg_run, weights_only=True)["state_dict"]
    assert torch.equal(state["item_codes"], reused["item_codes"])
    assert state["collab_embeddings"][1:].abs().sum(1).gt(0).all()  # the generator's collaborative input is real
    trained = read_checkpoint(stem(result["checkpoint"]) + ".collab.pth", "test")["state_dict"]
    assert torch.equal(state["collab_model.item_embedding.weight"], trained["item_embedding.weight"])  # fused model


def test_tokenizer_path_without_content_codes_is_refused_for_cold_target_simulation(cemg_run, tmp_path):
    """A codes file written without ``cold_target_simulation`` has no content-only tuples to train toward."""
    path = stem(cemg_run) + ".codes.json"
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), f"--checkpoint_dir={tmp_path}",
                                 f"--tokenizer_path={path}", "--cold_target_simulation=0.5"), path)
    assert "no content-only codes, which cold_target_simulation needs" in line


@pytest.mark.parametrize("suffix", [".collab.pth", ".collab.npz"])
def test_collab_source_file_of_a_run_gives_that_runs_embeddings(cemg_run, tmp_path, suffix):
    """Read back by internal id (.pth) or by item token (.npz), the embeddings are those the first run had, cold
    rows mapped the same way; a checkpoint also gives score fusion its model."""
    source = stem(cemg_run) + suffix
    fusion = ["--score_fusion_weights=[0,1]"] if suffix.endswith(".pth") else []
    result = finished_run(tmp_path, f"--collab_source={source}", *fusion, epochs=1)
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    first = torch.load(cemg_run, weights_only=True)["state_dict"]
    torch.testing.assert_close(state["collab_embeddings"][1:], first["collab_embeddings"][1:])  # 0: padding
    if fusion:
        table = read_checkpoint(source, "test")["state_dict"]["item_embedding.weight"]
        assert torch.equal(state["collab_model.item_embedding.weight"], table)


@pytest.mark.parametrize("key, suffix, change", [  # each file kind once, each kind of other data twice
    ("collab_source", ".collab.pth", "other_data"), ("collab_source", ".collab.npz", "cold_items"),
    ("tokenizer_path", ".codes.json", "other_data"), ("tokenizer_path", ".codes.json", "cold_items")])
def test_files_of_other_data_are_refused(cemg_run, other_data, tmp_path, key, suffix, change):
    path = stem(cemg_run) + suffix
    data = [f"--data_path={other_data}"] if change == "other_data" else ["--cold_item_ratio=0.1"]
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), f"--checkpoint_dir={tmp_path}", *data,
                                 f"--{key}={path}"), key, path)
    assert "made from other data" in line


def test_foreign_recbole_checkpoint_of_another_data_set_is_refused(cemg_run, tmp_path):
    """A stock RecBole checkpoint records its config but no fingerprint: its data-set name is compared."""
    checkpoint = torch.load(stem(cemg_run) + ".collab.pth", weights_only=False)  # the test's own file
    del checkpoint["config"].final_config_dict["data_fingerprint"]
    checkpoint["config"].final_config_dict["dataset"] = "ml-100k"
    foreign = tmp_path / "SASRec-foreign.pth"
    torch.save(checkpoint, foreign, pickle_protocol=4)
    line = assert_user_error(run("run_cemg.py", *TINY, *fast(), f"--checkpoint_dir={tmp_path}",
                                 f"--collab_source={foreign}"), str(foreign))
    assert "trained on data set 'ml-100k'" in line


def test_file_without_fingerprint_is_checked_by_name_item_count_and_cold_items():
    config = {"dataset": "tiny", "data_fingerprint": "abc", "cold_item_ratio": 0.0}
    check_origin({"dataset": "tiny"}, config, "f.pth", "collab_source", rows=61, n_items=61)
    with pytest.raises(InputError, match="has 50 item rows, the data set has 61"):
        check_origin({"dataset": "tiny"}, config, "f.pth", "collab_source", rows=50, n_items=61)
    with pytest.raises(InputError, match="records no data fingerprint"):
        check_origin({"dataset": "tiny"}, dict(config, cold_item_ratio=0.1), "f.pth", "collab_source")
    with pytest.raises(InputError, match="made from other data"):
        check_origin({"data_fingerprint": "def"}, config, "f.pth", "collab_source")


# ------------------------------------------------------------------------------------------ untrusted files
class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_is_read_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"config": RunsCode(str(marker)), "state_dict": {"item_embedding.weight": torch.ones(3, 2)},
                "numbers": np.float64(1.5)}, path, pickle_protocol=4)
    content = read_checkpoint(str(path), "collab_source")
    assert not marker.exists()
    assert torch.equal(content["state_dict"]["item_embedding.weight"], torch.ones(3, 2)) and content["numbers"] == 1.5


@pytest.mark.parametrize("source", ["folder", "corrupt"])
def test_collab_source_folder_or_corrupt_file_is_one_line(tmp_path, source):
    path = tmp_path / "models"
    if source == "corrupt":
        path = tmp_path / "SASRec-cut.pth"
        path.write_bytes(b"PK\x03\x04 half a file")
    else:
        path.mkdir()
    line = assert_user_error(run("run_cemg.py", *TINY, f"--checkpoint_dir={tmp_path}", f"--collab_source={path}"),
                             "collab_source", str(path))
    assert ("is a folder" if source == "folder" else "not a readable torch checkpoint") in line
