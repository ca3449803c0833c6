"""`dvd bench`: the JSON contract, the host-only stand-in, the fold switch, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from dvd import cli
from dvd.inference import benchmark
from dvd.inference.benchmark import STAGES
from dvd.model.dvd_model import MODEL_STAGES, DVDModel
from dvd.options import MODEL_PRESETS
from dvd.weights.presets import PRESETS

SMALL = ["--frames", "12", "--height", "32", "--width", "48", "--window", "9", "--overlap", "2", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bench(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(capsys):
    code, out, _ = bench(capsys, "--preset", "tiny", "--json", *SMALL)
    assert code == 0
    result = json.loads(out)  # one object, nothing else on stdout
    assert result["fps"] > 0 and result["frames"] == 12 and result["windows"] == 2
    assert result["peak_rss_bytes"] > 0 and result["peak_device_bytes"] is None  # CPU: not measured
    assert set(result["stages"]) == set(STAGES) and set(MODEL_STAGES) <= set(result["stages"])
    assert all(seconds >= 0 for seconds in result["stages"].values())
    assert result["stages"]["dit"] > 0
    assert sum(result["shares"].values()) == pytest.approx(1.0, abs=1e-6)
    assert all(result["flops"][name] > 0 for name in MODEL_STAGES)
    assert all(result["flops_per_second"][name] > 0 for name in MODEL_STAGES)


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
    """The host path is timed as `dvd predict` runs it: with its malloc settings (dvd.inference.allocator)."""
    calls: list[bool] = []
    monkeypatch.setattr(benchmark, "keep_heap_flat", lambda: calls.append(True) or True)
    code, _, _ = bench(capsys, "--host-only", "--json", *SMALL)
    assert code == 0 and calls == [True]


def bench_disparity(capsys, tmp_path, name: str, *switches: str) -> np.ndarray:
    code, out, _ = bench(capsys, "--save", "npy", "--json", "-o", str(tmp_path / name), *switches, *SMALL)
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


@pytest.mark.slow
def test_compiled_blocks_run_here_and_agree(capsys, tmp_path):
    """A real torch.compile run of the DiT's blocks on this CPU (inductor needs a C++ compiler; ~30 s cold)."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        pytest.skip("no C++ compiler for torch's inductor here (install g++)")
    compiled = bench_disparity(capsys, tmp_path, "compiled", "--compile")
    np.testing.assert_allclose(compiled, bench_disparity(capsys, tmp_path, "eager"), atol=1e-4)


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


@pytest.mark.slow
def test_full_size_preset_runs(capsys):
    """The 1.3B preset at a small size (about a minute on a CPU: ~25 s to build it in bf16)."""
    code, out, _ = bench(capsys, "--preset", "1.3b", "--dtype", "bfloat16", "--json", "--frames", "5", *SMALL[2:])
    assert code == 0 and json.loads(out)["flops"]["dit"] > 0
