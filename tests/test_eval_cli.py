"""`dvd eval` end to end: the generic folder layout, saved predictions in every accepted form, bad input, the
side-by-side report, and the built-in synthetic benchmark with a tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvd.commands import eval as eval_command
from dvd.errors import DVDError

REQUIRED_KEYS = {"abs_rel", "delta1", "delta2", "delta3", "rmse", "sq_rel", "rmse_log", "log10", "silog", "boundary_f1"}


def run_eval(*argv: object) -> int:
    parser = argparse.ArgumentParser(prog="dvd")
    eval_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.run(args)


def write_sequence(root: Path, name: str, depth: np.ndarray, rgb: bool = True) -> None:
    for k, frame in enumerate(depth):
        (root / name / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / name / "depth" / f"{k:04d}.npy", frame.astype(np.float32))
        if rgb:
            (root / name / "rgb").mkdir(parents=True, exist_ok=True)
            shade = np.clip(np.nan_to_num(frame, nan=0.0, posinf=0.0) * 20, 0, 255).astype(np.uint8)
            Image.fromarray(np.repeat(shade[..., None], 3, axis=2)).save(root / name / "rgb" / f"{k:04d}.png")


def random_depth(seed: int, frames: int, size: tuple[int, int] = (12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 10.0, size=(frames,) + size).astype(np.float32)


def affine_disparity(depth: np.ndarray) -> np.ndarray:
    return (2.5 / depth.astype(np.float64) + 0.3).astype(np.float32)


@pytest.mark.smoke
def test_folder_layout_scores_affine_predictions_perfectly_in_every_file_form(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    depth_a, depth_b = random_depth(0, 5), random_depth(1, 4)
    write_sequence(gt, "seq_a", depth_a)
    write_sequence(gt, "seq_b", depth_b)
    # seq_c: disparity linear in x, predicted at twice the size; a bilinear 2x downsample keeps it exact.
    columns = np.arange(16)
    write_sequence(gt, "seq_c", np.broadcast_to(1 / (0.1 + 0.02 * columns), (3, 12, 16)).copy(), rgb=False)
    pred.mkdir()
    np.save(pred / "seq_a.npy", affine_disparity(depth_a))
    np.savez(pred / "seq_b.npz", disparity=affine_disparity(depth_b))
    (pred / "seq_c").mkdir()
    big = np.broadcast_to(0.095 + 0.01 * np.arange(32), (3, 24, 32)).astype(np.float32)
    np.save(pred / "seq_c" / "disparity.npy", big)

    out = tmp_path / "out.json"
    assert run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--json", out) == 0
    result = json.loads(out.read_text())
    records = {r["sequence"]: r for r in result["sequences"]}
    assert list(records) == ["seq_a", "seq_b", "seq_c"] and result["skipped"] == []
    for record in records.values():
        assert REQUIRED_KEYS <= set(record)
        assert record["abs_rel"] == pytest.approx(0.0, abs=1e-5)
        assert record["delta1"] == 1.0
    assert "rgb_boundary_f1" in records["seq_a"] and "rgb_boundary_f1" not in records["seq_c"]
    assert any("resized bilinearly from 24x32" in note for note in records["seq_c"]["notes"])
    assert REQUIRED_KEYS <= set(result["mean"]) and result["mean"]["sequences"] == 3
    assert result["mean"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert result["mean"]["rgb_boundary_f1_sequences"] == 2


def test_output_folder_holds_all_result_files(tmp_path: Path) -> None:
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "run"
    depth = random_depth(2, 3)
    write_sequence(gt, "only", depth)
    pred.mkdir()
    np.save(pred / "only.npy", affine_disparity(depth) * 0.5 + np.float32(0.01) * random_depth(3, 3))
    run_eval(
        "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "-o", out, "--label", "mine"
    )
    assert sorted(p.name for p in out.iterdir()) == ["per_sequence.jsonl", "summary.csv", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "per_sequence.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == summary["sequences"]
    abs_rel = summary["mean"]["abs_rel"]
    assert 0 < abs_rel < 1
    table = (out / "summary.md").read_text()
    assert "AbsRel×100" in table and f"| mine | {abs_rel * 100:.2f} |" in table
    assert "mine,folder," in (out / "summary.csv").read_text()


def test_nonfinite_gt_pixels_are_excluded_and_counted(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    depth = random_depth(4, 3)
    holed = depth.copy()
    holed[0, 0, :3] = np.nan
    holed[1, 2, 5] = np.inf
    holed[2, 3, 3] = 0.0
    write_sequence(gt, "s", holed)
    pred.mkdir()
    np.save(pred / "s.npy", affine_disparity(depth) + np.float32(0.001) * random_depth(5, 3))
    out = tmp_path / "r.json"
    run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--json", out)
    record = json.loads(out.read_text())["sequences"][0]
    assert record["nonfinite_gt_pixels"] == 4
    assert record["valid_pixels"] == 3 * 12 * 16 - 5
    assert np.isfinite([record[k] for k in REQUIRED_KEYS]).all()


def test_bad_predictions_are_skipped_counted_and_reported(tmp_path: Path, capsys) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k, name in enumerate(["good", "nan", "short", "absent"]):
        write_sequence(gt, name, random_depth(k, 4))
    pred.mkdir()
    np.save(pred / "good.npy", affine_disparity(random_depth(0, 4)))
    bad = affine_disparity(random_depth(1, 4))
    bad[2, 1, 1] = np.nan
    np.save(pred / "nan.npy", bad)
    np.save(pred / "short.npy", affine_disparity(random_depth(2, 3)))
    out = tmp_path / "r.json"
    run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--json", out)
    result = json.loads(out.read_text())
    reasons = {s["sequence"]: s["reason"] for s in result["skipped"]}
    assert [r["sequence"] for r in result["sequences"]] == ["good"] and result["mean"]["sequences"] == 1
    assert "no prediction" in reasons["absent"]
    assert "NaN" in reasons["nan"]
    assert "3 frames, but 4 are evaluated" in reasons["short"]
    stdout = capsys.readouterr().out
    assert "3 of 4 sequences skipped" in stdout and "short: SKIPPED" in stdout
    with pytest.raises(DVDError, match="without --strict"):
        run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--strict")


def test_frame_selection_picks_frames_of_a_whole_video_prediction(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    depth = random_depth(6, 6)
    write_sequence(gt, "s", depth, rgb=False)
    pred.mkdir()
    whole = affine_disparity(depth)
    whole[1] = 0.0  # frame 1 is not selected by --start 2 --stride 2, so this cannot matter
    np.save(pred / "s.npy", whole)
    out = tmp_path / "r.json"
    run_eval(
        "--gt-folder",
        gt,
        "--predictions",
        pred,
        "--min-depth",
        0.5,
        "--max-depth",
        20,
        "--start",
        2,
        "--stride",
        2,
        "--frames",
        2,
        "--json",
        out,
    )
    record = json.loads(out.read_text())["sequences"][0]
    assert record["frames"] == 2 and record["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(DVDError, match="fewer than the 7 asked for"):
        run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--frames", 7)


def test_wrong_layouts_fail_with_one_clear_line(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    gt.mkdir()
    common = ("--predictions", pred, "--min-depth", 0.5, "--max-depth", 20)
    with pytest.raises(DVDError, match="no sequence folders"):
        run_eval("--gt-folder", gt, *common)
    write_sequence(gt, "ok", random_depth(0, 2))
    (gt / "stray").mkdir()
    with pytest.raises(DVDError, match="1 of 2 sequences .* has no depth/ folder"):
        run_eval("--gt-folder", gt, *common)
    (gt / "stray").rmdir()
    (gt / "ok" / "rgb" / "0001.png").unlink()
    with pytest.raises(DVDError, match="lacks 1 of the depth frames"):
        run_eval("--gt-folder", gt, *common)
    with pytest.raises(DVDError, match="--min-depth and --max-depth"):
        run_eval("--gt-folder", gt, "--predictions", pred)
    with pytest.raises(DVDError, match="--predictions PRED .* or --weights"):
        run_eval("--gt-folder", gt, "--min-depth", 0.5, "--max-depth", 20)


def test_partitions_short_and_long(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    for name, frames in [("a_short", 60), ("b_long", 210), ("c_tiny", 10)]:
        depth = random_depth(frames, frames, size=(4, 4))
        write_sequence(gt, name, depth, rgb=False)
        np.save(pred / f"{name}.npy", affine_disparity(depth) + np.float32(0.01) * random_depth(1, frames, (4, 4)))
    out = tmp_path / "r.json"
    run_eval("--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "--json", out)
    result = json.loads(out.read_text())
    assert [r["partition"] for r in result["sequences"]] == ["short", "long", "very_short"]
    for part, name in [("short", "a_short"), ("long", "b_long")]:
        record = next(r for r in result["sequences"] if r["sequence"] == name)
        assert result["partitions"][part]["sequences"] == 1
        assert result["partitions"][part]["abs_rel"] == record["abs_rel"]


def _run_document(label: str, dataset: str, abs_rel: float, delta1: float) -> dict:
    means = {"sequences": 2, "abs_rel": abs_rel, "delta1": delta1}
    return {
        "label": label,
        "settings": {"dataset": dataset, "split": "x", "frames": 110},
        "mean": means,
        "partitions": {},
        "sequences": [],
        "skipped": [],
    }


def test_report_renders_runs_side_by_side(tmp_path: Path, capsys) -> None:
    paths = []
    for label, dataset, abs_rel, delta1 in [
        ("dvd", "kitti", 0.0812, 0.9213),
        ("dvd", "bonn", 0.05, 0.97),
        ("vda", "kitti", 0.0901, 0.905),
    ]:
        path = tmp_path / f"{label}_{dataset}.json"
        path.write_text(json.dumps(_run_document(label, dataset, abs_rel, delta1)))
        paths.append(path)
    run_eval("--report", *paths, "-o", tmp_path / "report")
    table = capsys.readouterr().out
    assert "| dvd | 8.12 | 0.921 | 5.00 | 0.970 |" in table
    assert "| vda | 9.01 | 0.905 | – | – |" in table
    assert "kitti@110 (2) AbsRel×100↓" in table
    assert (tmp_path / "report" / "report.md").read_text() in table
    assert len((tmp_path / "report" / "report.csv").read_text().splitlines()) == 4
    with pytest.raises(DVDError, match="distinct --label"):
        run_eval("--report", paths[0], paths[0])
    with pytest.raises(DVDError, match="not an evaluation run"):
        run_eval("--report", tmp_path / "missing")


@pytest.mark.smoke
def test_synthetic_benchmark_end_to_end_with_a_tiny_model(tmp_path: Path, tiny_weights: Path) -> None:
    split = tmp_path / "one_clip.txt"
    split.write_text("test_0000\n")
    out = tmp_path / "run"
    assert (
        run_eval("--dataset", "synthetic", "--weights", tiny_weights, "--split", split, "--frames", 5, "-o", out) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    record = summary["sequences"][0]
    assert summary["settings"]["stitch"] == "benchmark" and summary["settings"]["window"] == 45
    assert record["frames"] == 5 and record["model_size"] == [96, 128]
    assert {"tae", "rgb_boundary_f1", "rel_temporal_diff"} <= set(record)
    assert np.isfinite([record[k] for k in REQUIRED_KEYS | {"tae"}]).all()
    assert "synthetic@5" in (out / "summary.md").read_text()


def test_model_on_folder_frames_not_multiple_of_16_with_stitched_windows(tmp_path: Path, tiny_weights: Path) -> None:
    gt = tmp_path / "gt"
    depth = random_depth(7, 9, size=(20, 24))
    write_sequence(gt, "s", depth)
    # The random tiny model's disparity happens to fall with this GT's, and a fitted scale <= 0 is skipped: reflect
    # the GT disparity (the RGB frames stay) so that the plumbing under test yields a scored record.
    for k, frame in enumerate(depth):
        np.save(gt / "s" / "depth" / f"{k:04d}.npy", (1 / (1.1 - 1 / frame)).astype(np.float32))
    out = tmp_path / "r.json"
    run_eval(
        "--gt-folder",
        gt,
        "--weights",
        tiny_weights,
        "--min-depth",
        0.5,
        "--max-depth",
        20,
        "--window",
        5,
        "--overlap",
        1,
        "--json",
        out,
    )
    record = json.loads(out.read_text())["sequences"][0]
    assert record["model_size"] == [32, 32] and record["frames"] == 9


def test_the_paper_window_follows_the_frame_rule():
    """45 frames (the paper's eval) where the rule takes it; the next length that fits where it does not (8n+1)."""
    from dvd.commands.eval import paper_window
    from dvd.model.backbone import FrameRule

    assert paper_window(FrameRule(4)) == 45
    assert paper_window(FrameRule(8)) == 49
