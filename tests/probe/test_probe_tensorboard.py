"""`vssl probe --log-dir`: each trained row writes TensorBoard event files, read back with tensorboard's reader."""

from __future__ import annotations

import json

import pytest

from tests.probe_helpers import VIEW, run_cli, tiny_store
from tests.schedules import reference_lr
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe-tb") / "store"
    tiny_store(path, chunk_videos=16)
    return path


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_trained_row_logs_each_head_per_step_and_selection_per_epoch(store, tmp_path, capsys):
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--knn", "--linear", "--solver", "minibatch",
                           "--lr", "0.01", "--lr", "0.1", "--weight-decay", "0", "--epochs", "3", "--min-steps", "12",
                           "--batch-size", "16", "--holdout", "0.25", "--device", "cpu", "--precision", "fp32",
                           "--report", tmp_path / "r.json", "--log-dir", tmp_path / "tb", "--quiet")
    assert code == 0, err
    row = next(r for r in json.loads((tmp_path / "r.json").read_text())["results"] if r["probe"] == "linear")
    chosen = row["params"]["selected"]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["linear-backbone"]   # k-NN trains nothing
    seed = tmp_path / "tb" / "linear-backbone" / "seed0"
    select, refit = events(seed / "select-0-0"), events(seed / "refit")
    heads = ["lr0.01_wd0", "lr0.1_wd0"]
    assert {f"loss/{h}" for h in heads} | {f"lr/{h}" for h in heads} <= set(select.Tags()["scalars"])
    steps = [e.step for e in select.Scalars("loss/lr0.1_wd0")]
    total = len(steps)
    assert steps == list(range(total)) and total >= 12
    warmup = chosen.get("warmup", row["params"]["warmup"])
    for e in select.Scalars("lr/lr0.1_wd0"):
        assert e.value == pytest.approx(reference_lr(e.step, total, 0.1, warmup), rel=1e-5, abs=1e-9)
    # the selection the report states is the held-out curve's best point
    best_head = f"lr{chosen['lr']:g}_wd{chosen['weight_decay']:g}"
    held = select.Scalars(f"held_out_top1/{best_head}")
    assert len(held) == 3
    assert held[chosen["epochs"] - 1].value == pytest.approx(chosen["val_score"], abs=1e-6)
    assert max(e.value for h in heads for e in select.Scalars(f"held_out_top1/{h}")) == pytest.approx(
        chosen["val_score"], abs=1e-6)
    # the refit trains the chosen head alone, for the chosen epochs
    assert {t.split("/")[1] for t in refit.Tags()["scalars"]} == {best_head}
    text = events(seed).Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"epochs": 3' in text


def test_a_solved_linear_head_logs_its_lambda_path(store, tmp_path, capsys):
    code, _, err = run_cli(capsys, "probe", store, "--view", VIEW, "--linear", "--device", "cpu",
                           "--report", tmp_path / "r.json", "--log-dir", tmp_path / "tb", "--quiet")
    assert code == 0, err
    path = next(r for r in json.loads((tmp_path / "r.json").read_text())["results"]
                if r["probe"] == "linear")["params"]["selected"]["path"]
    acc = events(tmp_path / "tb" / "linear-backbone" / "seed0")
    assert [e.value for e in acc.Scalars("held_out_top1")] == pytest.approx([s for _, s, _ in path], abs=1e-6)
    assert [e.value for e in acc.Scalars("l2")] == pytest.approx([l2 for l2, _, _ in path], rel=1e-6)
