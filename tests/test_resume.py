"""A run killed (SIGKILL) in the collaborative stage, resumed, killed again in the generator stage and resumed again
reaches the result of an uninterrupted run, and reports the seconds of all its segments.

What the resume restores shows in the first resumed generator epoch: on our CPU it has the very same training loss
as in the uninterrupted run (same weights, optimizer state, batch order and random state). Later epochs can drift:
at some step the two runs compute slightly different gradients from bitwise identical weights, optimizer state and
batch (recomputing a gradient within one run is deterministic, so it is not state the resume misses), how often
depends on the CPU, and over the remaining epochs the difference grows (final generator weights 1% apart, in relative
norm, in one run on our CPU). So the checks allow for float rounding: the first resumed epoch's logged loss within
1e-4 relative (a few units of its last logged digit; a lost optimizer state or batch order changes it by far more),
the tokenizer statistics within 1e-3 (trained on the resumed collaborative embeddings) and the final metrics within 3
of the 120 test users (observed: 1).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from recbole_cemg.resume import interrupted_run
from tests.conftest import assert_metrics_agree, generator_losses, numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough stages that the kills land inside them; the same settings for every run of this file. The cosine
# learning rate makes the first resumed epoch's loss also check that the schedule continues where it stopped.
SETTINGS = ["--dataset=tiny", "--config_files=tests/data/tiny.yaml", "--state=INFO", "--show_progress=False",
            "--collab_epochs=40", "--collab_stopping_step=40", "--epochs=12", "--stopping_step=12",
            "--lr_schedule=cosine"]


def start(checkpoint_dir, log, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "run_cemg.py", *SETTINGS, f"--checkpoint_dir={checkpoint_dir}", *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log_path) -> str:
    assert process.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    return log_path.read_text()


def kill_when(process: subprocess.Popen, pattern: str, min_epoch: int) -> str:
    """SIGKILL ``process`` as soon as the resume state matching ``pattern`` records ``min_epoch`` finished epochs."""
    deadline = time.time() + 600  # as long as a whole run may take (finish): a loaded machine is slow, not wrong
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        for path in glob.glob(pattern):
            state = torch.load(path, weights_only=True)
            if state["epoch"] >= min_epoch and not state["finished"]:
                process.kill()
                process.wait()
                return path
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no resume state {pattern} reached epoch {min_epoch}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    with open(folder / "log.txt", "w") as log:
        process = start(folder / "saved", log, f"--result_file={folder / 'result.json'}")
        text = finish(process, folder / "log.txt")
    return json.loads((folder / "result.json").read_text()), generator_losses(text)


def test_killed_twice_then_resumed_gives_the_uninterrupted_result(tmp_path, uninterrupted):
    expected, expected_losses = uninterrupted
    saved = tmp_path / "saved"
    with open(tmp_path / "first.txt", "w") as log:
        kill_when(start(saved, log), str(saved / "CEMG-*.collab.resume.pth"), min_epoch=3)
    checkpoint = glob.glob(str(saved / "CEMG-*.collab.pth"))[0].replace(".collab.pth", ".pth")
    assert not os.path.exists(checkpoint.replace(".pth", ".codes.json"))  # stopped inside the collaborative stage

    with open(tmp_path / "second.txt", "w") as log:
        kill_when(start(saved, log, f"--resume={checkpoint}"), checkpoint.replace(".pth", ".resume.pth"), min_epoch=2)
    second = (tmp_path / "second.txt").read_text()
    assert "collab.resume.pth: epoch" in second and "resumed from" in second
    seconds_at_kill = torch.load(checkpoint.replace(".pth", ".resume.pth"), weights_only=True)["seconds"]
    assert seconds_at_kill["generator"] > 0 and seconds_at_kill["train"] > seconds_at_kill["generator"]

    with open(tmp_path / "third.txt", "w") as log:
        third = finish(start(saved, log, f"--resume={checkpoint}", f"--result_file={tmp_path / 'result.json'}"),
                       tmp_path / "third.txt")
    assert "item codes loaded from" in third and "CEMG stage: collaborative" not in third
    assert f"resumed from {checkpoint.replace('.pth', '.resume.pth')}" in third
    first_resumed = int(re.search(r"resumed from \S+?CEMG-[^ ]*?\.resume\.pth: epoch (\d+)", third).group(1)) + 1
    losses = generator_losses(third)
    assert min(losses) == first_resumed
    assert float(losses[first_resumed]) == pytest.approx(float(expected_losses[first_resumed]), rel=1e-4)
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert numbers(resumed["tokenizer"]) == pytest.approx(numbers(expected["tokenizer"]), rel=1e-3, abs=1e-6)
    assert_metrics_agree(resumed, expected)
    # the seconds add up the segments: the second one's generator epochs count beside the third's
    third_epochs = sum(float(t) for t in re.findall(r"(?:training|evaluating) \[time: ([\d.]+)s", third))
    assert resumed["seconds"]["generator"] >= seconds_at_kill["generator"] + third_epochs
    assert resumed["seconds"]["train"] >= sum(resumed["seconds"][s] for s in ("collaborative", "tokenizer",
                                                                               "generator"))
    assert not glob.glob(str(saved / ".*.tmp"))  # atomic writes left no half-written file behind


def test_resume_of_a_run_that_left_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="that run left no resume state"):
        interrupted_run(str(tmp_path / "CEMG-never.pth"), {"model": "CEMG", "collab_source": "SASRec"})
