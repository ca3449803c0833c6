"""What dvd may be trusted with (issue "Security and trust, second pass", items 1, 2, 4 and 7): nothing it reads runs
code, nothing it writes goes through a link planted at a name it uses (or blocks on a FIFO there), it removes only
the staging folders it made, and a resumed run notices any change to its input.

Every payload below is a pickle whose loading would create the file `ran-code` in the workspace (its `__reduce__`
calls `open(path, "w")`; `test_the_payload_runs_code_when_unpickled` shows that it does): each case checks that the
file never appears and that the user gets one line and exit code 2.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from harness import Fault, Workspace, parametrize, run_fault, write_train_config
from media import write_test_video
from test_faults_outputs import dead_process, gt_and_predictions

from dvd import cli
from dvd.io import atomic
from dvd.jobs.manifest import MANIFEST_FILE, Manifest, read_manifest
from dvd.jobs.resume import STATE_FILE
from dvd.pipeline.dvd_pipeline import DVDPipeline

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "dvd"
MARKER = "ran-code"
SMALL = ("--height", 32, "--width", 48, "--quiet")


class Payload:
    """Unpickled, it opens `path` for writing: the file appearing proves that loading ran code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def torch_payload(ws: Workspace, path: Path) -> Path:
    torch.save({"state": Payload(ws.root / MARKER)}, path)
    return path


def numpy_payload(ws: Workspace, path: Path, key: str = "disparity") -> Path:
    """A .npy (or, by its suffix, .npz, under `key`) file holding an object array: numpy stores it as a pickle."""
    array = np.array([Payload(ws.root / MARKER)], dtype=object)
    if path.suffix == ".npz":
        np.savez(path, **{key: array})
    else:
        np.save(path, array, allow_pickle=True)
    return path


def no_code_ran(ws: Workspace) -> None:
    assert not (ws.root / MARKER).exists(), "loading a file ran the code in it"


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, f"expected one line, no traceback:\n{err}"
    return lines[0]


def predict(ws: Workspace, *extra, clip: Path | None = None) -> list:
    return ["predict", clip or ws.clip, "-o", ws.out, "--weights", ws.weights, *SMALL, *extra]


def test_the_payload_runs_code_when_unpickled(tmp_path: Path) -> None:
    """The payloads are live: an unsafe load of them creates the marker (so its absence below means something)."""
    ws = SimpleNamespace(root=tmp_path)  # what the payloads need of a workspace
    torch.load(torch_payload(ws, tmp_path / "a.pt"), weights_only=False)
    assert (tmp_path / MARKER).exists()
    (tmp_path / MARKER).unlink()
    np.load(numpy_payload(ws, tmp_path / "a.npy"), allow_pickle=True)
    assert (tmp_path / MARKER).exists()


# --- nothing in the package unpickles code ---------------------------------------------------------------------

UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "yaml.load",
    "yaml.load_all",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
    "yaml.full_load",
    "yaml.full_load_all",
    "torch.serialization.add_safe_globals",  # process-wide; a `safe_globals` context names what one load allows
}


def unsafe_loads(source: str) -> list[str]:
    """Each call in `source` that can unpickle code: a torch.load without a literal weights_only=True, any
    weights_only=False or allow_pickle=True, and the calls in UNSAFE_CALLS."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        literal = {key: value.value for key, value in keywords.items() if isinstance(value, ast.Constant)}
        if name in UNSAFE_CALLS:
            found.append(f"line {node.lineno}: {name}")
        if name == "torch.load" and literal.get("weights_only") is not True:
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if "weights_only" in keywords and literal.get("weights_only") is not True:
            found.append(f"line {node.lineno}: {name}(weights_only={ast.unparse(keywords['weights_only'])})")
        if "allow_pickle" in keywords and literal.get("allow_pickle") is not False:
            found.append(f"line {node.lineno}: {name}(allow_pickle={ast.unparse(keywords['allow_pickle'])})")
    return found


def test_the_scan_catches_each_unsafe_form() -> None:
    snippet = """
torch.load(path)
torch.load(path, weights_only=False)
torch.load(path, weights_only=flag)
np.load(path, allow_pickle=True)
pickle.loads(data)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
torch.serialization.add_safe_globals([Thing])
torch.load(path, map_location="cpu", weights_only=True)
np.load(path, allow_pickle=False)
yaml.safe_load(text)
"""
    assert [line.split(":")[0] for line in unsafe_loads(snippet)] == [
        "line 2",
        "line 3",
        "line 3",
        "line 4",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
    ]


def test_no_loader_in_the_package_can_unpickle_code() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"the package was not found at {PACKAGE}"
    found = [f"{path.relative_to(PACKAGE)} {hit}" for path in files for hit in unsafe_loads(path.read_text())]
    assert not found, "loads that can run code from a file:\n" + "\n".join(found)


# --- payloads, one per loader ------------------------------------------------------------------------------------


def weights_with(ws: Workspace, name: str, make) -> Path:
    """A copy of the tiny official weights whose file `name` is replaced by `make(ws, path)`."""
    folder = ws.root / "weights"
    shutil.copytree(ws.weights, folder)
    (folder / name).unlink(missing_ok=True)
    make(ws, folder / name)
    return folder


def yaml_payload(ws: Workspace, path: Path) -> Path:
    """YAML whose python tag, under yaml.load / unsafe_load, calls open(marker, "w")."""
    path.write_text(f'tau: !!python/object/apply:builtins.open ["{ws.root / MARKER}", "w"]\n')
    return path


def metric_folder(ws: Workspace) -> Path:
    """A Depth Anything V2 metric model folder whose weights are a pickle payload (pytorch_model.bin)."""
    from test_metric import depth_anything_config

    folder = ws.root / "metric"
    depth_anything_config("metric").save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "DPTImageProcessor"}))
    torch_payload(ws, folder / "pytorch_model.bin")
    return folder


def pipeline_folder_with_bin(ws: Workspace) -> Path:
    """`dvd convert`'s folder (diffusers layout) whose VAE weights are a pickle payload instead of safetensors."""
    folder = ws.root / "converted"
    assert cli.main(["convert", "--weights", str(ws.weights), "-o", str(folder)]) == 0
    for file in (folder / "vae").glob("diffusion_pytorch_model*"):
        file.unlink()
    torch_payload(ws, folder / "vae" / "diffusion_pytorch_model.bin")
    return folder


def predictions_with(ws: Workspace, name: str) -> list:
    """`dvd eval` of one sequence whose prediction file is a pickle payload."""
    gt, pred = gt_and_predictions(ws)
    (pred / "seq.npy").unlink()
    numpy_payload(ws, pred / name)
    argv = ["eval", "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20]
    return [*argv, "--json", ws.out / "r.json"]


PAYLOADS = [
    Fault(
        "VAE .pth holding a pickle payload",
        lambda ws: predict(ws, "--weights", weights_with(ws, "Wan2.1_VAE.pth", torch_payload)),
        message="needs arbitrary code execution to unpickle, which dvd refuses",
        check=no_code_ran,
    ),
    Fault(
        "model_config.yaml with a python tag",
        lambda ws: predict(ws, "--weights", weights_with(ws, "model_config.yaml", yaml_payload)),
        message="model_config.yaml is not valid YAML",
        check=no_code_ran,
    ),
    Fault(
        "pipeline folder whose VAE is a pickle .bin",
        lambda ws: predict(ws, "--weights", pipeline_folder_with_bin(ws)),
        message="vae holds no .safetensors weights: dvd does not load pickled weights (.bin)",
        check=no_code_ran,
    ),
    Fault(
        "--metric folder with a pickle pytorch_model.bin",
        lambda ws: predict(ws, "--metric", metric_folder(ws), "--focal", 200, "--max-frames", 5),
        message="needs arbitrary code execution to load, which dvd refuses",
        check=no_code_ran,
    ),
    Fault(
        "eval prediction .npy holding a pickle",
        lambda ws: predictions_with(ws, "seq.npy"),
        message="seq.npy cannot be read (Array can't be memory-mapped: Python objects in dtype.)",
        check=no_code_ran,
    ),
    Fault(
        "eval prediction .npz holding a pickle",
        lambda ws: predictions_with(ws, "seq.npz"),
        message="Object arrays cannot be loaded when allow_pickle=False",
        check=no_code_ran,
    ),
    Fault(
        "training config with a python tag",
        lambda ws: ["train", "--config", yaml_payload(ws, ws.root / "evil.yaml")],
        message="evil.yaml",
        check=no_code_ran,
    ),
]


@parametrize(PAYLOADS)
def test_weights_metric_models_and_predictions_run_no_code(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


def test_a_resume_state_holding_a_pickle_runs_no_code(workspace: Workspace, capsys) -> None:
    """A partial output (with dvd's marker, so it is taken up) whose resume-state.npz holds an object array."""
    final = workspace.out / "clip"
    partial = workspace.out / ".clip.partial-0-0-0a1b2c3d"
    partial.mkdir(parents=True)
    atomic._write_marker(partial, final)
    numpy_payload(workspace, partial / STATE_FILE, key="tree")  # the first thing a resume reads
    assert cli.main([str(a) for a in predict(workspace, "--resume")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "Object arrays cannot be loaded when allow_pickle=False" in line and "--overwrite" in line
    no_code_ran(workspace)
    assert not final.exists()


# --- training checkpoints --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step training run with its checkpoint, made once for the resume cases."""
    from accelerate.state import AcceleratorState

    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = write_train_config(root / "train.yaml", root / "run", checkpoint_every=1)
        assert cli.main(["train", "--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
    return root / "run"


def resume_with(trained: Path, name: str, drop: str | None = None) -> Callable[[Workspace], list]:
    """argv of `dvd train --resume` from a copy of `trained` whose checkpoint file `name` is a pickle payload (and
    whose file `drop` is gone)."""

    def argv(ws: Workspace) -> list:
        run = ws.out / "run"
        shutil.copytree(trained, run)
        checkpoint = run / "checkpoints" / "step-00000001"
        if drop is not None:
            (checkpoint / drop).unlink()
        (checkpoint / name).unlink(missing_ok=True)
        torch_payload(ws, checkpoint / name)
        config = write_train_config(ws.root / "train.yaml", run, checkpoint_every=1)
        return ["train", "--config", config, "--resume", "--set", "train.max_steps=2"]

    return argv


# (case, the checkpoint file replaced by a payload, a file removed, the line's fragment)
RESUME_PAYLOADS = [
    (
        "RNG states as a pickle of an older dvd (rng-0.pt)",
        "rng-0.pt",
        "rng-0.safetensors",
        "holds its RNG states as pickles (rng-0.pt, from an older dvd), which dvd does not load",
    ),
    ("rng-0.safetensors holding a pickle", "rng-0.safetensors", None, "rng-0.safetensors is not an RNG state file"),
    ("scheduler.pt holding a pickle", "scheduler.pt", None, "scheduler.pt needs arbitrary code execution to unpickle"),
    ("optimizer.pt holding a pickle", "optimizer.pt", None, "optimizer.pt needs arbitrary code execution to unpickle"),
]


@pytest.mark.parametrize("name,file,drop,message", RESUME_PAYLOADS, ids=[case[0] for case in RESUME_PAYLOADS])
def test_training_resume_files_run_no_code(
    name, file, drop, message, trained_run: Path, workspace: Workspace, capsys, one_thread_fresh_accelerate
) -> None:
    run_fault(Fault(name, resume_with(trained_run, file, drop), message=message, check=no_code_ran), workspace, capsys)


def test_deepspeed_checkpoints_are_read_weights_only(tmp_path: Path) -> None:
    """DeepSpeed's own reader unpickles anything; dvd's reads its ZeRO files (their four plain DeepSpeed types
    included) and refuses a payload."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from dvd.errors import DVDError
    from dvd.training.distributed import _weights_only_engine

    engine = _weights_only_engine()
    zero = {
        "optimizer_state_dict": {
            "loss_scaler": LossScaler(1.0),
            "zero_stage": ZeroStageEnum.gradients,
            "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}],
            "single_partition_of_fp32_groups": [torch.arange(4.0)],
        },
        "ds_version": "0.19.8",
    }
    torch.save(zero, tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    loaded = engine.load(str(tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"), map_location="cpu")
    assert loaded["optimizer_state_dict"]["zero_stage"] is ZeroStageEnum.gradients
    assert loaded["optimizer_state_dict"]["loss_scaler"].cur_scale == 1.0
    assert torch.equal(loaded["optimizer_state_dict"]["single_partition_of_fp32_groups"][0], torch.arange(4.0))
    ws = SimpleNamespace(root=tmp_path)  # what the payloads need of a workspace
    with pytest.raises(DVDError, match="needs arbitrary code execution to unpickle, which dvd refuses"):
        engine.load(str(torch_payload(ws, tmp_path / "mp_rank_00_model_states.pt")), map_location="cpu")
    no_code_ran(ws)


# --- no write through a link -------------------------------------------------------------------------------------


def test_eval_json_is_not_written_through_links_at_temporary_names(workspace: Workspace, capsys, monkeypatch) -> None:
    """Links to a user's file planted where the temporary file could go: at the name the old scheme derived from
    the pid, and at the name the next random token gives (so that only O_EXCL keeps it from being written through)."""
    tokens = iter(["feedc0de00000000"] * 5)  # the first random names dvd draws, whatever it draws them for
    real_token = atomic.secrets.token_hex
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens, None) or real_token(n))
    folder = workspace.out / "ev"
    folder.mkdir(parents=True)
    victim = workspace.user / "notes.txt"
    before = victim.read_bytes()
    planted = [folder / f".r.tmp-{os.getpid()}.json", folder / ".r.tmp-feedc0de00000000.json"]
    for link in planted:
        link.symlink_to(victim)
    gt, pred = gt_and_predictions(workspace)
    argv = ["eval", "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20]
    assert cli.main([str(a) for a in [*argv, "--json", folder / "r.json"]]) == 0
    assert victim.read_bytes() == before
    assert not (folder / "r.json").is_symlink() and json.loads((folder / "r.json").read_text())
    assert all(link.is_symlink() for link in planted)  # not dvd's: left where they were
    assert sorted(os.listdir(folder)) == sorted(["r.json", *(link.name for link in planted)])


def victim_link(ws: Workspace) -> None:
    ws.out.mkdir()
    (ws.out / MANIFEST_FILE).symlink_to(ws.user / "notes.txt")


def dangling_link(ws: Workspace) -> None:
    ws.out.mkdir()
    (ws.out / MANIFEST_FILE).symlink_to(ws.user / "created-through-the-link.txt")


def fifo(ws: Workspace) -> None:
    ws.out.mkdir()
    os.mkfifo(ws.out / MANIFEST_FILE)


def folder(ws: Workspace) -> None:
    (ws.out / MANIFEST_FILE).mkdir(parents=True)


def device(ws: Workspace) -> None:
    ws.out.mkdir()
    try:
        os.mknod(ws.out / MANIFEST_FILE, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD (root); the FIFO and link cases run everywhere")


def manifest_onto(make: Callable[[Workspace], None]) -> Callable[[Workspace], list]:
    def argv(ws: Workspace) -> list:
        make(ws)
        return predict(ws, "--max-frames", 5)

    return argv


def nothing_created_through_the_link(ws: Workspace) -> None:
    assert not (ws.user / "created-through-the-link.txt").exists()
    assert not (ws.out / "clip").exists()


MANIFESTS = [
    Fault(
        "manifest.jsonl a link to a user's file",
        manifest_onto(victim_link),
        message="manifest.jsonl is a symbolic link",
        check=nothing_created_through_the_link,
    ),
    Fault(
        "manifest.jsonl a dangling link",
        manifest_onto(dangling_link),
        message="manifest.jsonl is a symbolic link",
        check=nothing_created_through_the_link,
    ),
    Fault("manifest.jsonl a FIFO", manifest_onto(fifo), message="manifest.jsonl is a FIFO"),
    Fault("manifest.jsonl a folder", manifest_onto(folder), message="manifest.jsonl is a folder"),
    Fault("manifest.jsonl a device", manifest_onto(device), message="manifest.jsonl is a device"),
]


@parametrize(MANIFESTS)
def test_a_manifest_that_is_not_a_file_is_refused_before_the_model_loads(
    fault: Fault, workspace: Workspace, capsys, monkeypatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the manifest was checked")

    monkeypatch.setattr(DVDPipeline, "from_pretrained", no_model)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the run blocked on the manifest"))
    signal.alarm(60)  # a FIFO opened for writing blocks until a reader comes: never, here
    try:
        run_fault(fault, workspace, capsys)
    finally:
        signal.alarm(0)


def cut_short_manifest(ws: Workspace) -> list:
    ws.out.mkdir()
    (ws.out / MANIFEST_FILE).write_text('{"input": "earlier.mp4", "status": "ok"}')  # its newline never came
    return predict(ws, "--max-frames", 5)


def new_record_on_its_own_line(ws: Workspace) -> None:
    lines = read_manifest(ws.out)
    assert lines[0] == {"input": "earlier.mp4", "status": "ok"}
    assert len(lines) == 2 and lines[1]["status"] == "ok" and lines[1]["input"] == str(ws.clip)


@parametrize(
    [Fault("manifest whose last line lacks its newline", cut_short_manifest, code=0, check=new_record_on_its_own_line)]
)
def test_a_record_after_a_cut_short_line_starts_its_own_line(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


def test_a_manifest_swapped_for_a_link_during_the_run_is_not_written_through(tmp_path: Path) -> None:
    from dvd.errors import DVDError

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's\n")
    manifest = Manifest(tmp_path)  # checked when the run began: nothing there yet
    (tmp_path / MANIFEST_FILE).symlink_to(victim)
    with pytest.raises(DVDError, match="is a symbolic link"):
        manifest.record(tmp_path / "a.mp4", tmp_path / "a", "ok", frames=1)
    assert victim.read_text() == "the user's\n"


# --- only dvd's staging folders are removed ------------------------------------------------------------------------


def look_alikes(final: Path) -> tuple[list[Path], Path]:
    """Folders named like staging folders of `final` of dead runs, each holding a user's file: without a marker,
    with a marker of another folder (copied), with a marker that is a link to a matching one; and one that dvd made
    (its marker matches), which a run may remove."""
    pid, start = dead_process()
    parent = final.parent
    bare = parent / f".{final.name}.partial-1-0-abcd"  # pid 1 with another start time: a dead run's, by its name
    copied = parent / f".{final.name}.partial-{pid}-{start}-0a1b2c3d"
    linked = parent / f".{final.name}.old-{pid}-{start}-11111111"
    genuine = parent / f".{final.name}.partial-{pid}-{start}-22222222"
    for path in (bare, copied, linked, genuine):
        path.mkdir(parents=True)
        (path / "holiday.txt").write_text("the user's\n")
    atomic._write_marker(genuine, final)
    shutil.copy(genuine / atomic.STAGING_MARKER, copied / atomic.STAGING_MARKER)
    elsewhere = parent / "elsewhere" / f".{final.name}.old-{pid}-{start}-11111111"
    elsewhere.mkdir(parents=True)
    atomic._write_marker(elsewhere, final)
    (linked / atomic.STAGING_MARKER).symlink_to(elsewhere / atomic.STAGING_MARKER)
    return [bare, copied, linked], genuine


def eval_into(ws: Workspace, out: Path) -> list:
    gt, pred = gt_and_predictions(ws)
    return ["eval", "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, "-o", out]


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_folders_only_named_like_staging_folders_are_left_alone_and_named(
    command: str, workspace: Workspace, capsys
) -> None:
    final = workspace.out / "clip" if command == "predict" else workspace.out / "r16" / "r"
    foreign, genuine = look_alikes(final)
    argv = predict(workspace, "--max-frames", 5) if command == "predict" else eval_into(workspace, final)
    assert cli.main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    for path in foreign:
        assert (path / "holiday.txt").read_text() == "the user's\n", f"{path} was touched"
        assert f"{path} is named like a dvd staging folder but dvd did not make it" in err
    assert not genuine.exists()  # a dead run's staging folder that dvd made is still cleaned up
    assert final.is_dir()


# --- a resumed run notices any change to its input -----------------------------------------------------------


def interrupted_run(ws: Workspace, monkeypatch, clip: Path) -> tuple[list[str], Path, list[int]]:
    """`dvd predict` of `clip` interrupted (Ctrl-C) at its third model call: its argv, the partial output it kept,
    and the list that records the sizes of the model calls made from then on."""
    calls = []
    real = DVDPipeline.predict_windows

    def interrupted_at_the_third_call(self, windows):
        calls.append(len(windows))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, windows)

    monkeypatch.setattr(DVDPipeline, "predict_windows", interrupted_at_the_third_call)
    argv = [str(a) for a in predict(ws, "--window", 5, "--overlap", 1, "--max-frames", 40, clip=clip)]
    assert cli.main(argv) == 130
    partials = atomic.resumable_staging(ws.out / "clip", STATE_FILE)
    assert len(partials) == 1
    calls.clear()
    return argv, partials[0], calls


def test_a_resume_after_the_middle_of_the_input_changed_is_refused(workspace: Workspace, capsys, monkeypatch) -> None:
    """Same size, 200 bytes changed in the middle (far from the first and last 16 KiB), mtime put back."""
    (workspace.root / "long").mkdir()
    clip = write_test_video(workspace.root / "long" / "clip.mp4", frames=60, size=(180, 320))
    assert clip.stat().st_size > 3 * (1 << 14)
    argv, partial, calls = interrupted_run(workspace, monkeypatch, clip)
    kept = {path.name: path.read_bytes() for path in partial.iterdir() if path.is_file()}
    capsys.readouterr()

    times = clip.stat()
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(255 - byte for byte in data[middle : middle + 200])
    clip.write_bytes(bytes(data))
    os.utime(clip, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert clip.stat().st_size == times.st_size and clip.stat().st_mtime_ns == times.st_mtime_ns

    assert cli.main([*argv, "--resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "the input changed since the interrupted run" in line and "--overwrite" in line
    assert calls == [], "the model ran before the change was noticed"
    assert not (workspace.out / "clip").exists()
    assert {path.name: path.read_bytes() for path in partial.iterdir() if path.is_file()} == kept


def test_a_resume_does_not_write_through_a_link_planted_in_the_partial_output(
    workspace: Workspace, capsys, monkeypatch
) -> None:
    argv, partial, calls = interrupted_run(workspace, monkeypatch, workspace.clip)
    victim = workspace.user / "disparity.npy"
    (partial / "disparity.npy").rename(victim)  # the frames so far, now a file of the user's
    before = victim.read_bytes()
    (partial / "disparity.npy").symlink_to(victim)
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "disparity.npy is a link, which dvd did not write and does not write through" in line
    assert "--overwrite" in line and calls == []
    assert victim.read_bytes() == before
