"""benchmarks/patience_replay.py: RecBole's early-stopping rule replayed on logged validation curves."""

from conftest import load_script


def replay_module():
    return load_script("patience_replay", "benchmarks")


def test_replay_stops_where_recbole_would_and_keeps_the_best_epoch():
    replay = replay_module().replay
    curve = [0.10, 0.20, 0.15, 0.15, 0.15, 0.15, 0.30]
    assert replay(curve, 3) == (5, 1, 0.20)  # the fourth evaluation without improvement ends it
    assert replay(curve, 8) == (6, 6, 0.30)  # a patient run sees the late rise
    assert replay([0.2, 0.2, 0.1], 0) == (2, 1, 0.2)  # a tie counts as an improvement, as in RecBole


def test_curves_are_read_per_cemg_run_without_the_collaborative_stage():
    log = "\n".join([
        "CEMG stage: collaborative", "epoch 0 evaluating [time: 0.1s, valid_score: 0.900000]",
        "CEMG stage: generator", "epoch 0 evaluating [time: 0.1s, valid_score: 0.050000]",
        "epoch 1 evaluating [time: 0.2s, valid_score: 0.060000]",
        "CEMG stage: collaborative", "epoch 0 evaluating [time: 0.1s, valid_score: 0.800000]",
        "CEMG stage: generator", "epoch 0 evaluating [time: 0.1s, valid_score: 0.040000]"])
    assert replay_module().generator_curves(log) == [[0.05, 0.06], [0.04]]
