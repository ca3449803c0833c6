"""`dvd bench`: the JSON contract, the host-only stand-in, the fold switch, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn

from dvd import cli
from dvd.bench import benchmark
from dvd.bench.benchmark import STAGES
from dvd.engine.shots import ShotDetector
from dvd.io.readers import open_source
from dvd.io.writers import write_rgb_video
from dvd.model.backbones import BACKBONES
from dvd.model.dvd_model import MODEL_STAGES, DVDModel
from dvd.options import DEFAULT_CUT_THRESHOLD, MODEL_PRESETS
from dvd.weights.presets import PRESETS, random_model

SMALL = ["--frames", "12", "--height", "32", "--width", "48", "--window", "9", "--overlap", "2", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bench(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def dit_flops(config: dict, frames: int, height: int, width: int, folded: bool = True) -> int:
    """FLOPs (2 per multiply-add) of one call of a Wan DiT of `config` (WanTransformer3DModel's arguments) on a
    window of `frames` frames of height x width, counted by hand from its layers, as dvd runs it: the time
    conditions cached, the cross-attention `folded` (one text token) or over the 512 zero tokens."""
    dim, ffn, channels = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"], 16
    patch = math.prod(config["patch_size"])
    tokens = ((frames - 1) // 4 + 1) * (height // 8 * width // 8) // patch  # the VAE: 4x in time, 8x in space
    context = 1 if folded else 512
    text_embedding = context * (2 * config["text_dim"] * dim + 2 * dim * dim)
    self_attention = 4 * 2 * tokens * dim * dim + 2 * 2 * tokens * tokens * dim  # q, k, v, out; QK^T and AV
    if folded:
        cross_attention = 2 * (2 * dim * dim)  # to_v and to_out of the one token
    else:  # q and out of the image tokens, k and v of the text tokens, QK^T and AV
        cross_attention = 2 * 2 * tokens * dim * dim + 2 * 2 * context * dim * dim + 2 * 2 * tokens * context * dim
    feed_forward = 2 * 2 * tokens * dim * ffn
    patch_in_and_out = 2 * (2 * tokens * dim * channels * patch)  # Conv3d in, Linear out
    # The meta copy the count runs on misses the cache of the time conditions (keyed by device), so it computes them
    # once: the time embedding (sinusoid -> dim -> dim, then dim -> 6 dim) and the one text token they come with.
    time_conditions = 2 * config["freq_dim"] * dim + 2 * dim * dim + 2 * dim * 6 * dim + text_embedding // context
    layers = config["num_layers"] * (self_attention + cross_attention + feed_forward)
    return patch_in_and_out + text_embedding + layers + time_conditions


def counted_by_hooks(run, modules: list[nn.Module]) -> int:
    """FLOPs of `run()` from the shapes its convolutions and attention blocks see (forward hooks: 2 per
    multiply-add), counted independently of torch's FlopCounterMode."""
    total = 0

    def conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.weight[0].numel()  # in channels (per group) x kernel, per output

    def attention(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        batch, channels, time, height, width = inputs[0].shape
        total += 2 * 2 * batch * time * (height * width) ** 2 * channels  # QK^T and AV, one head, per frame

    hooks = []
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
                hooks.append(layer.register_forward_hook(conv))
            elif type(layer).__name__ == "WanAttentionBlock":
                hooks.append(layer.register_forward_hook(attention))
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return total


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def test_json_contract(capsys):
    before = peak_rss()
    code, out, _ = bench(capsys, "--preset", "tiny", "--json", *SMALL)
    assert code == 0
    result = json.loads(out)  # one object, nothing else on stdout
    assert result["frames"] == 12 and result["windows"] == 2
    assert result["fps"] == pytest.approx(result["frames"] / result["seconds"], rel=1e-9) and result["seconds"] > 0
    assert before <= result["peak_rss_bytes"] <= peak_rss() and result["peak_device_bytes"] is None  # CPU: none
    assert set(result["stages"]) == set(STAGES) and set(MODEL_STAGES) <= set(result["stages"])
    assert all(seconds >= 0 for seconds in result["stages"].values())
    assert result["stages"]["dit"] > 0
    assert sum(result["shares"].values()) == pytest.approx(1.0, abs=1e-6)
    # FLOPs of one window (9 frames of 32x48), each stage against an independent count on the real tiny model.
    model = random_model("tiny")
    pixels = torch.rand(1, 3, 9, 32, 48)
    latents = model.encode(pixels)
    expected = {
        "vae_encode": counted_by_hooks(lambda: model.encode(pixels), [model.vae]),
        "dit": dit_flops(PRESETS["tiny"].dit, 9, 32, 48),
        "vae_decode": counted_by_hooks(lambda: model.decode(latents), [model.vae]),
    }
    assert result["flops"] == expected
    for name in MODEL_STAGES:  # achieved: a window's FLOPs over the stage's seconds per window
        rate = result["flops"][name] / result["stages"][name]
        assert result["flops_per_second"][name] == pytest.approx(rate, rel=1e-9)


def test_full_size_dit_flops_of_the_benchmarks_readme():
    """The DiT rows of benchmarks/README.md's table (1.3B preset, one 81-frame 480x640 window) are the hand count."""
    table = (Path(__file__).parents[1] / "benchmarks" / "README.md").read_text()
    rows = {
        "DiT, folded cross-attention (default)": True,
        "DiT, reference (512 zero text tokens, `--no-fold`)": False,
    }
    for row, folded in rows.items():
        documented = float(re.search(rf"\| {re.escape(row)} \| ([\d.]+) \|", table).group(1))
        assert documented == round(dit_flops(PRESETS["1.3b"].dit, 81, 480, 640, folded) / 1e12, 1), row


def test_table_by_default(capsys):
    code, out, _ = bench(capsys, "--host-only", *SMALL)
    assert code == 0
    assert "DiT" in out and "read+decode" in out and "frames/s" in out and "n/a off CUDA" in out


def test_host_only_runs_no_model(capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model ran")

    for owner, name in [(DVDModel, "forward"), (WanTransformer3DModel, "forward"), (AutoencoderKLWan, "forward")]:
        monkeypatch.setattr(owner, name, no_model)
    monkeypatch.setattr(AutoencoderKLWan, "encode", no_model)
    code, out, _ = bench(capsys, "--host-only", "--json", *SMALL)
    assert code == 0
    result = json.loads(out)
    assert result["flops"] is None and all(result["stages"][name] == 0 for name in MODEL_STAGES)
    assert result["frames"] == 12


def test_bench_runs_with_the_allocator_settings_of_predict(capsys, monkeypatch):
    """The host path is timed as `dvd predict` runs it: with its malloc settings (dvd.engine.allocator)."""
    calls: list[bool] = []
    monkeypatch.setattr(benchmark, "keep_heap_flat", lambda: calls.append(True) or True)
    code, _, _ = bench(capsys, "--host-only", "--json", *SMALL)
    assert code == 0 and calls == [True]


def bench_disparity(capsys, tmp_path, name: str, *switches: str) -> np.ndarray:
    code, out, _ = bench(capsys, "--save", "npy", "--json", "-o", str(tmp_path / name), *SMALL, *switches)
    assert code == 0
    result = json.loads(out)
    assert result["fold"] == ("--no-fold" not in switches)
    assert result["precompute_time"] == ("--no-precompute-time" not in switches)
    assert result["channels_last"] == ("--channels-last" in switches) == result["cudnn_benchmark"]
    return np.load(tmp_path / name / "synthetic" / "disparity.npy")


def test_switches_give_the_same_disparity(capsys, tmp_path):
    """Defaults (the fast path, plain VAE) against every switch flipped; each part is tested on its own in
    tests/test_folding.py and tests/test_vae_layout.py. Tiles cover these small frames whole."""
    fast = bench_disparity(capsys, tmp_path, "fast")
    assert fast.shape == (12, 32, 48)
    switches = ["--no-fold", "--no-precompute-time", "--channels-last", "--cudnn-benchmark", "--tiled-vae"]
    np.testing.assert_allclose(bench_disparity(capsys, tmp_path, "flipped", *switches), fast, atol=1e-5)


def test_missing_compiler_is_one_line(capsys, monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", ("dvd-test-no-such-compiler",))
    code, out, err = bench(capsys, "--compile", "--device", "cpu", *SMALL)
    assert code == 2 and not out
    assert err.count("\n") == 1 and "needs a C++ compiler" in err and "run without --compile" in err


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        # inductor's C++ kernels: ~11 compiler runs, 20-70 s cold on two cores (the FX graph cache makes reruns fast)
        pytest.param("inductor", marks=pytest.mark.slow),
    ],
)
def test_compiled_blocks_run_here_and_agree(capsys, tmp_path, monkeypatch, backend):
    """A real torch.compile of the DiT's blocks (`--compile`, one window): dynamo traces dvd's folded blocks and the
    compiled model gives the eager one's disparity. aot_eager checks the trace and its functionalised graph in
    seconds; inductor also generates and compiles C++ kernels (it needs a C++ compiler)."""
    if backend == "inductor":
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            get_cpp_compiler()
        except InvalidCxxCompiler:
            pytest.skip("no C++ compiler for torch's inductor here (install g++)")
    else:
        monkeypatch.setattr(benchmark, "check_compiler", lambda device: None)  # only inductor needs one
    compiled_with: list[str] = []
    compile_as_dvd_asks = torch.compile

    def compile_with_backend(model, *args, **kwargs):
        compiled_with.append(backend)
        return compile_as_dvd_asks(model, *args, **{**kwargs, "backend": backend})

    one_window = ("--frames", "5", "--window", "5")
    eager = bench_disparity(capsys, tmp_path, "eager", *one_window)
    monkeypatch.setattr(torch, "compile", compile_with_backend)
    compiled = bench_disparity(capsys, tmp_path, "compiled", "--compile", *one_window)
    assert compiled_with == [backend] * 2  # each of the tiny DiT's two blocks
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (96, 128), (64, 1024), (540, 960)])
def test_the_synthetic_clip_is_one_shot_at_any_size(tmp_path, size):
    """The package's own cut detector (as `dvd predict --cuts auto` runs it) finds no cut in the synthetic clip,
    at tiny, CPU-bench, panoramic and real sizes, while the clip does move."""
    frames = list(open_source(benchmark.write_synthetic_clip(tmp_path / "clip.mp4", 40, size)).pixels(None, 1))
    detector = ShotDetector("auto")
    cuts, scores = [], []
    for frame in frames:
        cut = detector.observe(frame)
        scores.append(detector.last_score or 0.0)
        if cut is not None and cut.index > 0:
            cuts.append(cut.index)
    assert cuts == [] and max(scores) < DEFAULT_CUT_THRESHOLD / 2, (cuts, max(scores))
    motion = np.abs(frames[-1].astype(np.int16) - frames[0].astype(np.int16)).mean()
    assert motion > 10, motion  # a pan, not a still picture


def test_the_report_counts_the_windows_the_run_predicted(capsys, tmp_path):
    # dvd bench's CPU defaults: 96x128, windows of 17 overlapping by 4, a clip of two windows (30 frames).
    sizes = ["--height", "96", "--width", "128", "--window", "17", "--overlap", "4"]
    code, out, _ = bench(capsys, "--host-only", "--json", *sizes)
    assert code == 0
    result = json.loads(out)
    assert (result["frames"], result["windows"], result["shots"]) == (30, 2, 1)

    # An input with a hard cut after 10 of its 20 frames: each shot of 10 frames takes two windows of 9, four in
    # all, where one schedule over 20 frames would have three; the report counts what ran.
    clip = tmp_path / "cut.mp4"
    pan = list(benchmark.synthetic_frames(10, (48, 64)))
    write_rgb_video(clip, [*pan, *(255 - frame for frame in pan)], 24)
    code, out, _ = bench(capsys, "--host-only", "--json", "--input", str(clip), *SMALL[2:])
    assert code == 0
    result = json.loads(out)
    assert (result["frames"], result["windows"], result["shots"]) == (20, 4, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weights", "proof", "--preset", "tiny"], "--weights and --preset"),
        (["--attention-backend", "nonsense"], "unknown --attention-backend"),
        (["--frames", "0"], "--frames"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, message):
    code, out, err = bench(capsys, *argv, *SMALL[2:])
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("dvd bench: error:") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu(capsys):
    code, _, err = bench(capsys, "--device", "cuda", *SMALL)
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err


def test_missing_attention_backend(capsys):
    from diffusers.utils import is_flash_attn_available

    if is_flash_attn_available():
        pytest.skip("flash-attn is installed here")
    code, _, err = bench(capsys, "--attention-backend", "flash", *SMALL)
    assert code == 2 and err.count("\n") == 1 and "--attention-backend flash" in err


def test_failing_compile_is_one_line(capsys, monkeypatch):
    def failing_compile(function, *args, **kwargs):
        def compiled(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr(benchmark, "check_compiler", lambda device: None)  # as where a compiler is installed
    code, out, err = bench(capsys, "--compile", *SMALL)
    assert code == 2 and not out
    assert err.count("\n") == 1 and "--compile failed" in err and "run without --compile" in err


def test_help_does_not_import_torch():
    probe = (
        "import sys\nfrom dvd import cli\n"
        "try:\n    cli.main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "False" and "--host-only" in done.stdout


def test_presets_have_one_home():
    assert tuple(PRESETS) == MODEL_PRESETS
    sizes = {(family, size) for family, backbone in BACKBONES.items() for size in backbone.sizes}
    assert {(preset.backbone.family, preset.size) for preset in PRESETS.values()} == sizes
    assert (PRESETS["tiny"], PRESETS["1.3b"]) == (PRESETS["wan2.1:tiny"], PRESETS["wan2.1:1.3b"])


@pytest.mark.parametrize(
    ("preset", "stride", "model_size"),
    [("wan2.2:tiny", 32, [32, 64]), ("cogvideox:tiny", 16, [32, 48]), ("ltx-video:tiny", 32, [32, 64])],
)
def test_every_familys_sizes_are_presets(capsys, preset, stride, model_size):
    """A family whose DiT takes a text embedding runs on zeros of its shape (no text encoder is built)."""
    code, out, _ = bench(capsys, "--preset", preset, "--json", *SMALL)
    result = json.loads(out)
    assert code == 0 and result["model"] == f"preset {preset}, random weights"
    assert (result["spatial_stride"], result["model_size"], result["windows"]) == (stride, model_size, 2)
    assert result["flops"]["dit"] > 0


@pytest.mark.slow
def test_full_size_preset_runs(capsys):
    """The 1.3B preset at a small size (about a minute on a CPU: ~25 s to build it in bf16)."""
    code, out, _ = bench(capsys, "--preset", "1.3b", "--dtype", "bfloat16", "--json", "--frames", "5", *SMALL[2:])
    assert code == 0 and json.loads(out)["flops"]["dit"] == dit_flops(PRESETS["1.3b"].dit, 5, 32, 48)
