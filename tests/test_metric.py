"""`dvd predict --metric ... --save ply` end to end with tiny random transformers models loaded from folders (the path
Hub ids take), the robust per-shot fit, intrinsics, and every bad-input path of the metric flags."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from model_stub import StandInPipe, stub_model
from plyfile import PlyData

from dvd import cli
from dvd.data.raster import resize_frames, unit_float
from dvd.engine.video import VideoSettings
from dvd.errors import DVDError
from dvd.io.readers import open_source
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.metric import MetricPrediction, MetricSettings
from dvd.metric.align import fit_shot, keyframe_indices, shot_ranges
from dvd.metric.intrinsics import estimated_intrinsics
from dvd.metric.models import TransformersMetricModel, focal_corrected
from dvd.metric.post_pass import metric_post_pass
from dvd.metric.settings import frame_selected, parse_frames

SMALL = ["--height", "32", "--width", "48", "--window", "9", "--overlap", "3"]
FOV = 60.0  # the tiny Depth Pro's field of view: its FOV head is set to answer this for every image
DINO = {
    "model_type": "dinov2",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 4,
    "image_size": 16,
    "mlp_ratio": 2,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def tiny_depth_pro(tmp_path_factory) -> Path:
    """A random Depth Pro (with FOV head) saved like apple/DepthPro-hf: config.json, weights, preprocessor_config.
    Its depth head answers a positive canonical inverse depth around 1 (random weights scaled down, bias 1), its
    FOV head a constant FOV degrees, so that the outputs are in a sensible range."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    config = DepthProConfig(
        patch_size=16,
        fusion_hidden_size=8,
        intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[8, 8],
        scaled_images_ratios=[0.5, 1],
        scaled_images_overlap_ratios=[0.0, 0.5],
        scaled_images_feature_dims=[8, 8],
        merge_padding_value=1,
        use_fov_model=True,
        num_fov_head_layers=1,
        image_model_config=DINO,
        patch_model_config=DINO,
        fov_model_config=DINO,
    )
    torch.manual_seed(0)
    model = DepthProForDepthEstimation(config).eval()
    with torch.no_grad():
        model.fov_model.head.layers[-1].weight.zero_()
        model.fov_model.head.layers[-1].bias.fill_(FOV)
        model.head.layers[-2].weight.mul_(0.003)
        model.head.layers[-2].bias.fill_(1.0)
    folder = tmp_path_factory.mktemp("tiny_depth_pro")
    model.save_pretrained(folder)
    processor = {
        "image_processor_type": "DepthProImageProcessor",
        "size": {"height": 32, "width": 32},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "rescale_factor": 1 / 255,
        "resample": 2,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def depth_anything_config(kind: str):
    from transformers import DepthAnythingConfig

    backbone = {**DINO, "out_indices": [1, 2], "reshape_hidden_states": False}
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=8,
        head_hidden_size=8,
        reassemble_factors=[2, 1],
        patch_size=4,
        depth_estimation_type=kind,
        max_depth=20,
    )


@pytest.fixture(scope="session")
def tiny_depth_anything(tmp_path_factory) -> Path:
    """A random Depth Anything V2 metric model and its image processor, saved with save_pretrained. Its weights
    are drawn wider than the default init, so that its depth varies over the image."""
    from transformers import DepthAnythingForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(depth_anything_config("metric")).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("tiny_depth_anything")
    model.save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": 32, "width": 32}, keep_aspect_ratio=True, ensure_multiple_of=4
    ).save_pretrained(folder)
    return folder


class InverseDepthPipe(StandInPipe):
    """Stands in for DVD: its disparity is the metric model's own inverse depth (times 3, plus 0.1), so the fit has
    an exact answer: 1 / depth = disparity / 3 - 0.1 / 3."""

    weights_id = "inverse of the metric model"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)

    def __init__(self, metric: TransformersMetricModel, constant: bool = False) -> None:
        self.metric, self.constant, self.calls = metric, constant, 0

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.constant:
            return [np.full(np.shape(w)[:3], 0.5, np.float32) for w in windows]
        return [3.0 / self.metric.predict(unit_float(np.asarray(w))).depth + 0.1 for w in windows]


@pytest.fixture
def dvd(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", sorted(set(cli.COMMAND_MODULES) | {"predict"}))
    return lambda *argv: cli.main(["predict", *map(str, argv)])


def use_pipe(monkeypatch, pipe) -> None:
    stub_model(monkeypatch, lambda cls, *a, **k: pipe)


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_depth_pro_folder_end_to_end_with_point_clouds(clip, dvd, monkeypatch, tiny_depth_pro, tmp_path):
    """At the model size (--keep-model-size) the metric model sees the very frames the stand-in DVD saw, so the
    fit is exact and depth_m.npy is the metric model's own depth on every frame."""
    metric = TransformersMetricModel(str(tiny_depth_pro), "cpu")
    use_pipe(monkeypatch, InverseDepthPipe(metric))
    out = tmp_path / "out"
    code = dvd(clip, "-o", out, *SMALL, "--keep-model-size", "--metric", tiny_depth_pro, "--metric-keyframes", 4,
               "--save", "ply", "--ply-step", 3, "--ply-frames", "0,7:9", "--max-frames", 12, "--quiet")  # fmt: skip
    assert code == 0
    result = out / "clip"
    meta = json.loads((result / "meta.json").read_text())
    depth = np.load(result / "depth_m.npy")
    assert depth.shape == (12, 32, 64) and depth.dtype == np.float32
    assert meta["kind"] == "disparity" and meta["outputs"]["depth_m"]["file"] == "depth_m.npy"
    (fit,) = meta["metric"]["shots"]
    assert fit["keyframes"] == [1, 4, 7, 10] and (fit["start"], fit["end"]) == (0, 12)
    assert fit["scale"] == pytest.approx(1 / 3, rel=1e-3) and fit["shift"] == pytest.approx(-0.1 / 3, abs=1e-3)
    rgb = resize_frames(decoded_frames(clip)[:12].astype(np.float32) / 255, (32, 64))
    np.testing.assert_allclose(depth, metric.predict(rgb).depth, rtol=5e-3)  # the engine rounds to 8 bits
    # Intrinsics: Depth Pro's estimate (its FOV head says FOV for every frame), principal point at the centre.
    focal = 32 / math.tan(math.radians(FOV / 2))
    assert meta["intrinsics"]["fx"] == pytest.approx(focal) and meta["intrinsics"]["cx"] == 32
    # Point clouds: the chosen frames, every 3rd pixel with depth, coloured by the frame, in metres.
    assert sorted(p.name for p in (result / "points_ply").iterdir()) == ["000000.ply", "000007.ply", "000008.ply"]
    for index in (0, 7, 8):
        ply = PlyData.read(str(result / "points_ply" / f"{index:06d}.ply"))
        assert any("metres" in comment for comment in ply.comments)
        vertices = ply["vertex"].data
        rows, cols = np.mgrid[0:32:3, 0:64:3]
        z = depth[index][rows, cols]
        keep = z > 0
        assert len(vertices) == keep.sum() > 0
        np.testing.assert_allclose(vertices["z"], z[keep], rtol=1e-6)
        np.testing.assert_allclose(vertices["x"], (cols[keep] + 0.5 - 32) * z[keep] / focal, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vertices["y"], (rows[keep] + 0.5 - 16) * z[keep] / focal, rtol=1e-5, atol=1e-6)
        colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], -1).astype(int)
        expected = np.rint(rgb[index][rows[keep], cols[keep]] * 255).astype(int)
        assert np.abs(colours - expected).max() <= 1
    assert meta["outputs"]["ply"]["frames"] == 3 and "metres" in meta["outputs"]["ply"]["units"]


def test_depth_anything_folder_with_focal_and_model_size(clip, dvd, monkeypatch, tiny_depth_anything, tmp_path):
    metric = TransformersMetricModel(str(tiny_depth_anything), "cpu")
    assert not metric.estimates_fov
    use_pipe(monkeypatch, InverseDepthPipe(metric))
    out = tmp_path / "out"
    code = dvd(clip, "-o", out, *SMALL, "--metric", tiny_depth_anything, "--focal", 200, "--keep-model-size",
               "--save", "ply", "--ply-frames", "2", "--max-frames", 6, "--quiet")  # fmt: skip
    assert code == 0
    meta = json.loads((out / "clip" / "meta.json").read_text())
    assert np.load(out / "clip" / "depth_m.npy").shape == (6, 32, 64)
    assert meta["intrinsics"]["fx"] == pytest.approx(200 * 64 / 160)  # --focal is in source pixels
    (fit,) = meta["metric"]["shots"]  # the stand-in's disparity is 3 / depth + 0.1: the fit's exact answer
    assert fit["scale"] == pytest.approx(1 / 3, rel=1e-3) and fit["shift"] == pytest.approx(-0.1 / 3, abs=1e-3)
    ply = PlyData.read(str(out / "clip" / "points_ply" / "000002.ply"))
    np.testing.assert_allclose(ply["vertex"].data["z"], np.load(out / "clip" / "depth_m.npy")[2, ::4, ::4].ravel())
    # meta.json lists depth_m.npy and points_ply/, so --overwrite recognises the folder as dvd's own.
    code = dvd(clip, "-o", out, *SMALL, "--metric", tiny_depth_anything, "--focal", 200, "--keep-model-size",
               "--max-frames", 6, "--overwrite", "--quiet")  # fmt: skip
    assert code == 0 and not (out / "clip" / "points_ply").exists()


class Brightness:
    """A stand-in metric model: metres = 1 / (0.2 + brightness)."""

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        return 1.0 / (0.2 + rgb.mean(axis=-1))


def test_one_fit_per_shot(clip, tmp_path):
    """With meta.json's "shots", each shot gets its own scale and shift: a disparity whose scale and shift jump at
    a cut comes out in metres on both sides."""
    rgb = decoded_frames(clip)[:12].astype(np.float32) / 255
    inverse = 0.2 + rgb.mean(axis=-1)
    disparity = np.concatenate([3 * inverse[:5] + 0.1, 6 * inverse[5:] + 0.5]).astype(np.float32)
    np.save(tmp_path / "disparity.npy", disparity)
    meta = {"outputs": {}, "shots": [{"start": 0, "end": 5}, {"start": 5, "end": 12}]}
    settings = MetricSettings(Brightness(), keyframes=3)
    result = metric_post_pass(settings, tmp_path, open_source(clip), OutputSettings(max_frames=12), meta)
    first, second = result["metric"]["shots"]
    assert first["keyframes"] == [0, 2, 4] and second["keyframes"] == [6, 8, 10]
    assert first["scale"] == pytest.approx(1 / 3, rel=1e-4) and first["shift"] == pytest.approx(-0.1 / 3, abs=1e-5)
    assert second["scale"] == pytest.approx(1 / 6, rel=1e-4) and second["shift"] == pytest.approx(-0.5 / 6, abs=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "depth_m.npy"), 1 / inverse, rtol=1e-4)
    assert shot_ranges({}, 12) == [(0, 12)]


def test_robust_fit_ignores_outliers():
    rng = np.random.default_rng(0)
    pixels = []
    for size in (5000, 200):
        disparity = rng.uniform(0.2, 1.0, size)
        inverse = 0.5 * disparity + 0.1
        inverse[: size // 10] *= rng.uniform(2, 5, size // 10)  # 10 % gross outliers (reflections, sky)
        pixels.append((disparity, inverse))
    fit = fit_shot(0, 2, (0, 1), pixels, "test")
    assert fit.scale == pytest.approx(0.5, rel=1e-3) and fit.shift == pytest.approx(0.1, abs=1e-3)
    assert fit.inliers == pytest.approx(0.9, abs=0.01) and fit.residual < 1e-3
    np.testing.assert_allclose(fit.depth(np.array([1.0, -0.5])), [1 / 0.6, 0.0])  # no depth beyond the fit


def test_keyframes_and_ply_frame_lists():
    assert keyframe_indices(0, 12, 4) == [1, 4, 7, 10]
    assert keyframe_indices(10, 13, 16) == [10, 11, 12]
    assert keyframe_indices(0, 100, 1) == [50]
    slices = parse_frames("0, 10:12, 20::5")
    assert [i for i in range(40) if frame_selected(i, slices)] == [0, 10, 11, 20, 25, 30, 35]
    assert frame_selected(123, None)
    for bad in ("a", "1:2:0", "-1", "1,,2", "1:2:3:4"):
        with pytest.raises(DVDError, match="--ply-frames"):
            parse_frames(bad)


def test_a_metric_object_through_the_python_api(clip, tmp_path):
    """Any object with predict(frames) -> metres plugs in; a wrong output size is one clear error, and only the
    finished disparity is kept (meta.json says why the metric pass failed)."""
    frames = decoded_frames(clip)[:6].astype(np.float32) / 255

    class Disparity(InverseDepthPipe):
        def predict_windows(self, windows):
            return [0.2 + unit_float(w).mean(axis=-1) for w in windows]

    pipe = Disparity(None)
    video, output = VideoSettings(32, 48, 9, 3), OutputSettings(formats=("npy",), max_frames=6)
    written = predict_to_folder(
        pipe, open_source(clip), tmp_path / "a", video, output, metric=MetricSettings(Brightness())
    )
    assert written == 6
    depth = np.load(tmp_path / "a" / "depth_m.npy")
    np.testing.assert_allclose(np.median(depth / (1 / (0.2 + frames.mean(-1)))), 1, atol=0.02)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["metric"]["model"] == "Brightness" and "intrinsics" not in meta

    class WrongSize:
        def predict(self, rgb):
            return MetricPrediction(np.ones((len(rgb), 10, 10), np.float32))

    with pytest.raises(DVDError, match=r"metric model returned depth of shape \(\d+, 10, 10\).*kept in"):
        predict_to_folder(pipe, open_source(clip), tmp_path / "b", video, output, metric=MetricSettings(WrongSize()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["disparity.npy", "meta.json"]
    failed = json.loads((tmp_path / "b" / "meta.json").read_text())["metric_failed"]
    assert "metric model returned depth of shape" in failed["error"]


def bad_cases(clip: Path, tmp_path: Path, depth_pro: Path, depth_anything: Path) -> dict[str, tuple[list, str]]:
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    relative = tmp_path / "relative"
    depth_anything_config("relative").save_pretrained(relative)
    return {
        "folder that is no model": (["--metric", not_a_model], "is not a Depth Pro or Depth Anything V2 metric"),
        "missing folder": (["--metric", tmp_path / "missing"], "no such folder"),
        "relative depth anything": (["--metric", relative], "relative (unit-free) Depth Anything"),
        "ply without depth": (["--save", "ply", "--fov", 60], "--save ply needs depth"),
        "ply without intrinsics": (["--save", "ply", "--depth-range", 1, 5], "needs the camera's focal length"),
        "model without fov": (["--metric", depth_anything, "--save", "ply"], "does not estimate it"),
        "fov and focal": (["--metric", depth_pro, "--fov", 60, "--focal", 100], "give one of them"),
        "bad range": (["--metric", depth_pro, "--depth-range", 5, 1], "0 < NEAR < FAR"),
        "frames beyond the video": (["--metric", depth_pro, "--save", "ply", "--ply-frames", 40], "has 30 frames"),
        "ply frames without ply": (["--metric", depth_pro, "--ply-frames", 1], "add ply to --save"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "folder that is no model",
        "missing folder",
        "relative depth anything",
        "ply without depth",
        "ply without intrinsics",
        "model without fov",
        "fov and focal",
        "bad range",
        "frames beyond the video",
        "ply frames without ply",
    ],
)
def test_bad_metric_input_is_one_line_before_any_model_work(
    case, clip, dvd, monkeypatch, tiny_depth_pro, tiny_depth_anything, tmp_path, capsys
):
    pipe = InverseDepthPipe(None)
    use_pipe(monkeypatch, pipe)
    argv, words = bad_cases(clip, tmp_path, tiny_depth_pro, tiny_depth_anything)[case]
    assert dvd(clip, "-o", tmp_path / "out", *SMALL, *argv, "--quiet") == 2
    error = capsys.readouterr().err.strip()
    assert words in error and len(error.splitlines()) == 1
    assert pipe.calls == 0 and not (tmp_path / "out" / "clip").exists()


def test_constant_depth_is_a_degenerate_fit(clip, dvd, monkeypatch, tiny_depth_pro, tmp_path, capsys):
    use_pipe(monkeypatch, InverseDepthPipe(None, constant=True))
    assert dvd(clip, "-o", tmp_path / "out", *SMALL, "--metric", tiny_depth_pro, "--max-frames", 6, "--quiet") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' "Loading weights" bar
    assert error.startswith("dvd predict: error: metric alignment") and "degenerate" in error
    assert "without --metric" in error and "kept in" in error
    # The finished disparity is kept (the expensive part); nothing of the failed metric pass is.
    kept = sorted(path.name for path in (tmp_path / "out" / "clip").iterdir())
    assert kept == ["depth_vis.mp4", "disparity.npy", "meta.json"]


def test_depth_range_maps_disparity_for_point_clouds_without_metric(clip, dvd, monkeypatch, tmp_path):
    class BrightnessPipe(InverseDepthPipe):
        def predict_windows(self, windows):
            return [unit_float(w).mean(axis=-1) for w in windows]

    use_pipe(monkeypatch, BrightnessPipe(None))
    out = tmp_path / "out"
    argv = ["--save", "ply", "--depth-range", 1, 4, "--fov", 90, "--ply-frames", "0", "--max-frames", 3]
    assert dvd(clip, "-o", out, *SMALL, *argv, "--quiet") == 0
    ply = PlyData.read(str(out / "clip" / "points_ply" / "000000.ply"))
    assert any("NOT metric" in comment for comment in ply.comments)
    vertices = ply["vertex"].data
    z = vertices["z"]
    assert z.min() == pytest.approx(1, abs=1e-5) and z.max() == pytest.approx(4, abs=1e-5)  # percentiles: clipped
    # Each point's pixel (pinhole, focal 80, principal point at the centre of 160x90) and its disparity: depth is
    # linear in inverse depth and the nearer (larger disparity) is the smaller z; a reversed map fails here.
    cols = np.rint(vertices["x"] * 80 / z + 80 - 0.5).astype(int)
    rows = np.rint(vertices["y"] * 80 / z + 45 - 0.5).astype(int)
    disparity = np.load(out / "clip" / "disparity.npy")[0][rows, cols]
    inside = (z > 1 + 1e-4) & (z < 4 - 1e-4)
    slope, intercept = np.polyfit(disparity[inside], 1 / z[inside], 1)
    assert slope > 0 and inside.sum() > 0.9 * len(z)
    np.testing.assert_allclose(1 / z[inside], slope * disparity[inside] + intercept, atol=1e-5)
    assert np.all(np.diff(z[np.argsort(disparity, kind="stable")]) <= 1e-6)
    meta = json.loads((out / "clip" / "meta.json").read_text())
    assert not (out / "clip" / "depth_m.npy").exists() and "metric" not in meta
    assert meta["intrinsics"]["fx"] == pytest.approx(80)  # 90 degrees over 160 pixels
    assert "NOT metric" in meta["outputs"]["ply"]["units"]


def test_known_focal_corrects_depth_pro_and_bad_estimates_are_refused():
    # Depth Pro's depth is proportional to the focal length it assumed: at 60 degrees estimated and 90 known, the
    # known focal is tan(30°) / tan(45°) of the estimated one.
    prediction = MetricPrediction(np.full((2, 3, 4), 2.0, np.float32), np.array([60.0, 90.0]))
    corrected = focal_corrected(prediction, 90.0)
    np.testing.assert_allclose(corrected[0], 2.0 * math.tan(math.radians(30)), rtol=1e-6)
    np.testing.assert_allclose(corrected[1], 2.0, rtol=1e-6)
    assert focal_corrected(MetricPrediction(prediction.depth), 90.0) is prediction.depth  # no estimate: as is
    assert estimated_intrinsics(np.array([50.0, 60.0, 70.0]), 90, 160).hfov_deg == pytest.approx(60)
    with pytest.raises(DVDError, match="give the camera's --fov DEG or --focal PX"):
        estimated_intrinsics(np.array([-10.0, -12.0]), 90, 160)
