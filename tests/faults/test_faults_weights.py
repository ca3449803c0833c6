"""Bad weights, bad predictions and ground truth for `dvd eval`, and bad training inputs: one clear line, exit 2.

Every case used to end in a traceback, a long wait or, worse, exit 0 with a wrong answer (an all-NaN disparity, a
perfect score for a negated prediction, a LoRA continued over another base).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from harness import Fault, Workspace, parametrize, run_dvd, run_fault, write_train_config
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import dvd.weights.load as weights_load
from dvd import DVDPipeline, cli
from dvd.errors import DVDError
from dvd.model.dvd_model import DVDModel

LORA_Q = "pipe.dit.blocks.0.self_attn.q"


def predict(ws: Workspace, weights: Path | str, *extra) -> list:
    return ["predict", ws.clip, "-o", ws.out, "--weights", weights, "--height", 32, "--width", 48, "--quiet", *extra]


def weights_variant(ws: Workspace, change=None, config: dict | None = None) -> Path:
    """A copy of the tiny official weights with `change(state)` applied to model.safetensors and `config` merged
    into model_config.yaml."""
    folder = ws.root / "weights"
    folder.mkdir(exist_ok=True)
    state = load_file(ws.weights / "model.safetensors")
    if change is not None:
        change(state)
    save_file(state, folder / "model.safetensors")
    settings = yaml.safe_load((ws.weights / "model_config.yaml").read_text())
    (folder / "model_config.yaml").write_text(yaml.safe_dump({**settings, **(config or {})}))
    (folder / "Wan2.1_VAE.pth").symlink_to(ws.weights / "Wan2.1_VAE.pth")
    return folder


def nan_tensor(state: dict) -> None:
    state[f"{LORA_Q}.base_layer.weight"][3, 5] = float("nan")


def wrong_lora_shape(state: dict) -> None:
    down = state[f"{LORA_Q}.lora_A.default.weight"]
    state[f"{LORA_Q}.lora_A.default.weight"] = torch.zeros(down.shape[0], down.shape[1] - 1)


def wrong_lora_rank(state: dict) -> None:
    up = state[f"{LORA_Q}.lora_B.default.weight"]
    state[f"{LORA_Q}.lora_B.default.weight"] = torch.zeros(up.shape[0], up.shape[1] + 1)


def convert(ws: Workspace, weights: Path) -> list:
    return ["convert", "--weights", weights, "-o", ws.out / "converted"]


def out_is_empty(ws: Workspace) -> None:
    """The run wrote nothing under out/ but the manifest's line: no out/clip (predict) or out/converted, whole or
    not, and no staging folder."""
    left = sorted(path.name for path in ws.out.iterdir()) if ws.out.exists() else []
    assert left in ([], ["manifest.jsonl"]), f"a failed run left {left} in {ws.out}"


WEIGHTS = [
    Fault(
        "NaN tensor: predict",
        lambda ws: predict(ws, weights_variant(ws, nan_tensor)),
        message=f"tensor '{LORA_Q}.base_layer.weight' in ",
        check=out_is_empty,
    ),
    Fault(
        "NaN tensor: convert",
        lambda ws: convert(ws, weights_variant(ws, nan_tensor)),
        message="NaN/inf values",
        check=out_is_empty,
    ),
    Fault(
        "denoise_step 5",
        lambda ws: predict(ws, weights_variant(ws, config={"denoise_step": 5})),
        message="denoise_step in ",
    ),
    Fault(
        "denoise_step not a number",
        lambda ws: convert(ws, weights_variant(ws, config={"denoise_step": "half"})),
        message="tau must be a number in (0, 1]",
    ),
    Fault(
        "LoRA tensor of the wrong shape: predict",
        lambda ws: predict(ws, weights_variant(ws, wrong_lora_shape)),
        message=f"'{LORA_Q.removeprefix('pipe.dit.')}.lora_A.default.weight' has shape (4, 255), expected (4, 256)",
    ),
    Fault(
        "LoRA tensor of the wrong shape: convert",
        lambda ws: convert(ws, weights_variant(ws, wrong_lora_rank)),
        message="lora_B.default.weight' has shape (256, 5), expected (256, 4)",
        check=out_is_empty,
    ),
    Fault("device tpu: predict", lambda ws: predict(ws, ws.weights, "--device", "tpu"), message="--device 'tpu'"),
    Fault("device cuda:x", lambda ws: predict(ws, ws.weights, "--device", "cuda:x"), message="--device 'cuda:x'"),
]


@parametrize(WEIGHTS)
def test_bad_weights(fault: Fault, workspace: Workspace, capsys):
    run_fault(fault, workspace, capsys)


def test_tau_override_is_checked_before_loading(tiny_weights: Path):
    with pytest.raises(DVDError, match=r"tau= is 5: tau must be a number in \(0, 1\]"):
        DVDPipeline.from_pretrained(tiny_weights, device="cpu", tau=5)


def test_nan_output_stops_the_run(workspace: Workspace, capsys, monkeypatch: pytest.MonkeyPatch):
    """Finite weights can still produce NaN (float16 overflow): the first window's output is checked."""

    def overflowing(self: DVDModel, pixels: torch.Tensor, **stages) -> torch.Tensor:
        return torch.full((pixels.shape[0], pixels.shape[2], *pixels.shape[3:]), float("nan"))

    monkeypatch.setattr(DVDModel, "forward", overflowing)
    fault = Fault(
        "NaN output", lambda ws: predict(ws, ws.weights), message="--dtype float32 or bfloat16", check=out_is_empty
    )
    run_fault(fault, workspace, capsys)


# --- a full disk -------------------------------------------------------------------------------------------------


def disk_full(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_full_disk_on_convert(workspace: Workspace, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    fault = Fault(
        "full disk on convert",
        lambda ws: convert(ws, ws.weights),
        message=f"could not write {workspace.out / 'converted'} (Error while serializing",
        check=out_is_empty,
    )
    run_fault(fault, workspace, capsys)


def test_full_disk_on_convert_to_a_real_small_disk(workspace: Workspace, capsys):
    disk = workspace.root / "small-disk"
    disk.mkdir()
    mounted = run_mount(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", disk])
    if not mounted:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        code = cli.main(["convert", "--weights", str(workspace.weights), "-o", str(disk / "c")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"could not write {disk / 'c'} (" in err and "No space left on device" in err, err
        assert not list(disk.iterdir()), "the staging output was left on the full disk"
    finally:
        run_mount(["umount", disk])


def run_mount(argv: list) -> bool:
    if shutil.which(str(argv[0])) is None:
        return False
    return subprocess.run([str(a) for a in argv], capture_output=True, check=False).returncode == 0


# --- weights that are clearly a local path ------------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Hub entry point of dvd.weights.load fails the test; returns the names of those called."""
    called: list[str] = []

    def refuse(name: str):
        def hub(*args, **kwargs):
            called.append(name)
            raise AssertionError(f"{name} contacted the Hub")

        return hub

    for name in ("hf_hub_download", "snapshot_download", "get_hf_file_metadata", "try_to_load_from_cache"):
        monkeypatch.setattr(weights_load, name, refuse(name))
    return called


@pytest.mark.parametrize(
    "source", ["./w", "w/x/y", "~/dvd-no-such-weights", "w/model.safetensors", "owner/vae.pth", "{root}/abs"]
)
def test_missing_local_weights_fail_at_once(source: str, workspace: Workspace, capsys, no_hub, monkeypatch):
    monkeypatch.chdir(workspace.root)
    fault = Fault(
        f"missing {source}",
        lambda ws: predict(ws, source.format(root=ws.root)),
        message="weights not found",
    )
    started = time.perf_counter()
    run_fault(fault, workspace, capsys)
    assert time.perf_counter() - started < 5 and not no_hub


def test_owner_name_still_goes_to_the_hub(no_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="contacted the Hub"):
        weights_load.load_weights("someone/some-dvd")
    assert no_hub == ["try_to_load_from_cache"]


# --- dvd eval: predictions that must not be scored ------------------------------------------------------------------

SIZE = (12, 16)


def depth_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 10.0, size=(3, *SIZE)).astype(np.float32)


def disparity_of(depth: np.ndarray) -> np.ndarray:
    return (2.5 / depth + 0.3).astype(np.float32)


def write_gt(ws: Workspace) -> Path:
    """A generic GT folder with sequences `good` and `bad`."""
    gt = ws.root / "gt"
    for seed, name in enumerate(("good", "bad")):
        (gt / name / "depth").mkdir(parents=True)
        for k, frame in enumerate(depth_of(seed)):
            np.save(gt / name / "depth" / f"{k:04d}.npy", frame)
    return gt


def eval_case(ws: Workspace, bad, *extra) -> list:
    """Score saved predictions: `good` is exact, `bad(pred_folder, disparity)` writes the other one."""
    gt, pred = write_gt(ws), ws.root / "pred"
    pred.mkdir()
    np.save(pred / "good.npy", disparity_of(depth_of(0)))
    bad(pred, disparity_of(depth_of(1)))
    return ["eval", "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, *extra]


def eval_model(ws: Workspace, *extra) -> list:
    """Run the model on the GT folder (it has no RGB frames, so every case must fail before any sequence)."""
    return ["eval", "--gt-folder", write_gt(ws), "--weights", ws.weights, "--min-depth", 0.5, "--max-depth", 20, *extra]


def negated(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", -disparity)


def as_depth(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", 1 / disparity)


def integers(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", (disparity * 1000).astype(np.int32))


def booleans(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", disparity > 0.5)


def complex_values(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", disparity.astype(np.complex64))


def swapped_aspect(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", np.ascontiguousarray(disparity.transpose(0, 2, 1)))


def objects(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", np.array([disparity, "x"], dtype=object), allow_pickle=True)


def corrupt_header(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", disparity)
    data = bytearray((pred / "bad.npy").read_bytes())
    data[10:30] = b"{'descr': <garbage> "
    (pred / "bad.npy").write_bytes(bytes(data))


def truncated(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", disparity)
    (pred / "bad.npy").write_bytes((pred / "bad.npy").read_bytes()[:200])


BAD_PREDICTIONS = [
    (negated, "anti-correlated with the GT disparity"),
    (as_depth, "is it depth rather than disparity?"),
    (integers, "dtype int32, not floating point"),
    (booleans, "dtype bool, not floating point"),
    (complex_values, "dtype complex64, not floating point"),
    (swapped_aspect, "has 16x12 frames, but the GT is 12x16"),
    (objects, "cannot be read"),
    (corrupt_header, "cannot be read"),
    (truncated, "cannot be read"),
]

EVAL = [
    Fault(f"eval {bad.__name__}", lambda ws, bad=bad: eval_case(ws, bad), code=0, message=why)
    for bad, why in BAD_PREDICTIONS
] + [
    Fault(f"eval --strict {bad.__name__}", lambda ws, bad=bad: eval_case(ws, bad, "--strict"), message=why)
    for bad, why in BAD_PREDICTIONS
]


@parametrize(EVAL)
def test_bad_predictions(fault: Fault, workspace: Workspace, capsys):
    _, out, _ = run_fault(fault, workspace, capsys)
    if fault.code == 0:
        assert "bad: SKIPPED" in out and "1 of 2 sequences skipped" in out


def good_only(pred: Path, disparity: np.ndarray) -> None:
    np.save(pred / "bad.npy", disparity)


def broken_folder(ws: Workspace) -> list:
    argv = eval_case(ws, good_only)
    (ws.root / "gt" / "stray").mkdir()
    return argv


EVAL_OPTIONS = [
    Fault("eval device tpu", lambda ws: eval_model(ws, "--device", "tpu"), message="--device 'tpu'"),
    Fault("eval window 0", lambda ws: eval_model(ws, "--window", 0), message="pass a positive --window"),
    Fault("eval overlap 50", lambda ws: eval_model(ws, "--overlap", 50), message="between 0 and 44"),
    Fault(
        "eval generic folder with a broken sequence",
        broken_folder,
        message="1 of 3 sequences cannot be read under",
    ),
    Fault("demo window 0", lambda ws: ["demo", "--window", 0, "-o", ws.out / "d.mp4"], message="--window"),
]


@parametrize(EVAL_OPTIONS)
def test_eval_and_demo_options(fault: Fault, workspace: Workspace, capsys):
    _, _, err = run_fault(fault, workspace, capsys)
    assert "default 81" not in err and "split None" not in err


# --- dvd train ----------------------------------------------------------------------------------------------------


def test_train_is_quiet_and_refuses_to_resume_over_another_base(workspace: Workspace, capsys, monkeypatch):
    """One real run (a child process, to see what it prints on a fresh import), then resumes that must be refused."""
    config = write_train_config(workspace.root / "train.yaml", workspace.out / "run")
    done = run_dvd(["train", "--config", config], env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", f"dvd train printed on stderr:\n{done.stderr}"  # no DeepSpeed accelerator line

    resume = ["train", "--config", config, "--resume", "--set", "train.max_steps=2"]
    for fault in [
        Fault(
            "resume over another tiny seed",
            lambda ws: [*resume, "--set", "model.tiny_seed=1"],
            message="(model.weights 'tiny' now loads different tensors)",
        ),
        Fault(
            "resume over other weights",
            lambda ws: [*resume, "--set", f"model.weights={ws.weights}"],
            message=f"(model.weights was 'tiny', now '{workspace.weights}'); set model.weights back to 'tiny'",
        ),
    ]:
        run_fault(fault, workspace, capsys)

    # a full disk while exporting names the export folder; the checkpoints and the previous export stay
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    export = workspace.out / "run" / "export" / "merged"
    full_disk = Fault(
        "full disk on export",
        lambda ws: resume,
        message=f"could not write {export}",
        replaces=("out/run/metrics.csv", "out/run/config.yaml"),
        leaves=("out/run/checkpoints/step-00000002",),
    )
    run_fault(full_disk, workspace, capsys)
    checkpoints = workspace.out / "run" / "checkpoints"
    assert sorted(os.listdir(checkpoints / "step-00000002")) == sorted(os.listdir(checkpoints / "step-00000001"))


TRAIN_OPTIONS = [
    Fault(
        "--set of the wrong type is blamed on --set",
        lambda ws: [
            "train",
            "--config",
            write_train_config(ws.root / "train.yaml", ws.out / "run"),
            "--set",
            "train.max_steps=ten",
        ],
        message="error: --set train.max_steps=ten: config key 'train.max_steps' must be int",
    ),
    Fault(
        "--set of invalid YAML",
        lambda ws: [
            "train",
            "--config",
            write_train_config(ws.root / "train.yaml", ws.out / "run"),
            "--set",
            "train.max_steps=[",
        ],
        message="--set train.max_steps=[",
    ),
    Fault(
        "--set tau 5",
        lambda ws: [
            "train",
            "--config",
            write_train_config(ws.root / "train.yaml", ws.out / "run"),
            "--set",
            "model.tau=5",
        ],
        message="--set model.tau=5: model.tau is 5.0",
    ),
]


@parametrize(TRAIN_OPTIONS)
def test_train_options(fault: Fault, workspace: Workspace, capsys):
    run_fault(fault, workspace, capsys)
