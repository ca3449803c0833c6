"""`DVDPipeline`: video depth with DVD as a diffusers `DiffusionPipeline` (components `transformer` and `vae`, of any
backbone family `dvd.model.backbones` knows).

    >>> from dvd import DVDPipeline
    >>> pipe = DVDPipeline.from_pretrained("weights/dvd")            # or "proof", a Hub id, official files
    >>> out = pipe("clip.mp4")                                        # DVDPipelineOutput
    >>> out.prediction                                                # float32 [T, H, W] disparity, source size

What `save_pretrained` writes is the standard diffusers layout (`model_index.json`, `transformer/`, `vae/`), so
once it is imported also `DiffusionPipeline.from_pretrained(folder, dtype=torch.bfloat16)` returns a `DVDPipeline`.
`model_index.json` also keeps the backbone family (`"backbone"`) and the model's own inference defaults
(`dvd.weights.defaults`), which `pipe(video)` uses for the sizes and windows it is not given. A family whose empty
condition is not zeros has it saved beside them (`condition.safetensors`), which `DVDPipeline.from_pretrained` reads
(diffusers' own loader does not know the file).
A model trained with the generative objective (`"objective": "generative"` in `model_index.json`) samples each window
with Euler steps from seeded noise: `pipe(video, num_inference_steps=T, generator=g)` (`dvd.pipeline.sampling`).
`.to(device)`, `enable_model_cpu_offload()` and `pipe.vae.enable_tiling()` work as for any diffusers pipeline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.utils import BaseOutput
from safetensors.torch import save_file

from dvd.engine.allocator import ArrayPool
from dvd.engine.stages import TRANSFER, NoTimer
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.errors import DVDError
from dvd.io.atomic import foreign_entries
from dvd.model.dvd_model import DEFAULT_TAU, DVDModel
from dvd.model.flow_matching import REGRESSION, check_objective
from dvd.options import DEFAULT_CUT_THRESHOLD, DEFAULT_STITCH
from dvd.pipeline.inputs import Frames, VideoInput, check_inputs, unit_tensor, window_as_model_pixels
from dvd.pipeline.sampling import Sampling, seed_from, window_generator
from dvd.weights import load_weights
from dvd.weights.about import read_defaults, weights_kind
from dvd.weights.defaults import CONFIG_KEY, ModelDefaults
from dvd.weights.formats import check_tau
from dvd.weights.load import CONDITION_FILE, CONDITION_KEY, LEGACY_CONFIG, PIPELINE_INDEX, WeightFiles

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """cuda, then mps, then cpu when not given; a clear error when the asked-for device is absent."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    requested = str(device)
    try:
        device = torch.device(device)
    except RuntimeError:  # torch's message lists every device type it knows, most of which dvd cannot run on
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DVDError(f"unknown or unsupported --device {requested!r}: use cpu, cuda (or cuda:N) or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DVDError(f"--device {requested} asked for, but torch sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DVDError(
            f"--device {requested} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s); "
            "use --device cuda:0"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DVDError("--device mps asked for, but this torch build has no MPS support; use --device cpu")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (as the official code runs), float32 elsewhere, unless asked otherwise."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DVDError(f"unknown dtype '{dtype}'; choose float32, bfloat16 or float16")
    return DTYPES[dtype]


def check_finite_output(disparity: torch.Tensor, dtype: torch.dtype) -> None:
    """Stop a run whose model output holds NaN/inf: stitching and the writers would pass it on as a wrong answer.
    One reduction over the decoded disparity, small next to the model pass that made it."""
    finite = torch.isfinite(disparity)
    if bool(finite.all()):
        return
    share = "all" if not bool(finite.any()) else f"{int((~finite).sum())} of {finite.numel()}"
    raise DVDError(
        f"the model produced NaN/inf disparity ({share} values, running in {str(dtype).removeprefix('torch.')}): "
        "the weights or the input produce NaN, e.g. a float16 overflow; pass --dtype float32 or bfloat16, "
        "and check the weights"
    )


@dataclass
class DVDPipelineOutput(BaseOutput):
    """What `DVDPipeline.__call__` returns.

    prediction: affine-invariant disparity (larger = nearer; unknown scale and shift), float32 [T, H, W] at the
        source size (or the model size with ``keep_model_size``); numpy, or torch with ``output_type="pt"``.
    fps: frames per second of the prediction (the source's, divided by ``stride``), when the input has one.
    model_size: (H, W) the model ran at.
    """

    prediction: np.ndarray | torch.Tensor
    fps: float | None
    model_size: tuple[int, int]


class DVDPipeline(DiffusionPipeline):
    """Video depth with DVD: one deterministic DiT pass per window at t = 1000·tau (or, for a generative model, Euler
    steps from seeded noise), stitched over the video."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(
        self,
        transformer: ModelMixin,
        vae: ModelMixin,
        tau: float = DEFAULT_TAU,
        defaults: dict[str, int] | None = None,
        backbone: str | None = None,
        condition: torch.Tensor | None = None,
        objective: str = REGRESSION,
    ) -> None:
        """`defaults`: the model's own height, width, window and overlap (`dvd.weights.defaults`), any of them.
        `backbone`: the family the saved config records (checked against the modules'; None: not checked).
        `condition`: the family's empty condition where it is saved with the model (see `dvd.model.backbone`).
        `objective`: how the DiT was trained ("regression", DVD's; "generative", the flow-matching baseline)."""
        super().__init__()
        tau = check_tau(tau, "the pipeline's tau")
        objective = check_objective(objective, "the pipeline's objective")
        self.model = DVDModel(transformer, vae, tau=tau, condition=condition, objective=objective).eval()
        if backbone is not None and backbone != self.model.family:
            raise DVDError(
                f"the pipeline's config records backbone {backbone!r}, but its DiT and VAE are a "
                f"{self.model.family} model: re-save the model"
            )
        backbone_class = type(self.model.backbone)
        if condition is None and backbone_class.condition_from_text_encoder():
            # diffusers' own loader builds the pipeline from model_index.json alone and never sees the file.
            raise DVDError(
                f"a {self.model.family} model needs its empty-prompt embedding ({CONDITION_FILE}): load a saved "
                "folder with DVDPipeline.from_pretrained (not DiffusionPipeline.from_pretrained)"
            )
        self.model_defaults = ModelDefaults.from_config(defaults, "the pipeline's defaults").for_backbone(
            backbone_class.default_window, backbone_class.default_overlap
        )
        self.register_modules(transformer=transformer, vae=vae)
        self.register_to_config(
            tau=tau, backbone=self.model.family, objective=objective, **{CONFIG_KEY: self.model_defaults.as_config()}
        )
        # How windows are sampled when a call does not say (generative models only; `set_sampling`).
        self.sampling: Sampling | None = Sampling() if self.model.generative else None
        self.weights_id = "in-memory model"
        self.weights_kind: str | None = None  # official, proof, trained or base (`dvd.weights.about`) once loaded
        self.stage_timer = NoTimer()  # a profiler sets a `dvd.bench.profiling.StageTimer` (`dvd bench`)
        # The batches on their way in and, from a device, the disparity on its way out: window-sized host arrays
        # that would otherwise be fresh pages for every call (dvd.engine.allocator). Between calls the pipeline
        # keeps those of the last shape (one call's, ~100-300 MB at 480x864, 81 frames).
        self._host_inputs, self._host_outputs = ArrayPool(), ArrayPool()
        self.fold_constants()

    def fold_constants(self, cross_attention: bool = True, time_conditions: bool = True) -> None:
        """The backbone's exact fast path (both on by default), each part switchable (False: the reference
        computation); Wan's: `cross_attention`, the DiT's cross-attention over the all-zero text context as a
        constant per block, computed from one context token (`dvd.model.folding`); `time_conditions`, the time
        embedding and every block's modulation input at the fixed timestep, computed once now
        (`dvd.model.fixed_time`). A backbone without such paths runs the reference computation either way. A
        generative model's timestep changes with every step: its time conditions are never fixed."""
        fixed_time = time_conditions and not self.model.generative
        self.model.backbone.fold_constants(cross_attention, fixed_time, self.model.timestep)

    def unfold_constants(self) -> None:
        """Back to the reference computation (Wan: 512 zero text tokens through diffusers' own cross-attention, and
        the time conditions computed on every call)."""
        self.fold_constants(cross_attention=False, time_conditions=False)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path | WeightFiles | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        tau: float | None = None,
    ) -> DVDPipeline:
        """Load any weights `dvd` reads (official files, `save_pretrained` folders, single files, "proof", Hub ids,
        or the files `dvd.weights.load.locate_weights` found; None = the official release) onto `device` (default:
        cuda, mps, cpu) in `dtype` (default: bf16 on CUDA, float32 elsewhere); `tau` overrides the checkpoint's.
        The model's own inference defaults come along (`model_defaults`)."""
        target = resolve_device(device)
        precision = resolve_dtype(dtype, target)
        if tau is not None:
            check_tau(tau, "tau=")
        loaded = load_weights(pretrained_model_name_or_path)
        defaults = read_defaults(pretrained_model_name_or_path).as_config()
        model = loaded.model.to_precision(precision).to(target)
        pipe = cls(
            model.transformer,
            model.vae,
            tau=loaded.model.tau if tau is None else tau,
            defaults=defaults,
            condition=model.backbone.condition,
            objective=model.objective,
        )
        pipe.weights_id = loaded.weights_id
        pipe.weights_kind = weights_kind(pretrained_model_name_or_path, loaded.kind)
        return pipe

    @classmethod
    def from_model(cls, model: DVDModel, defaults: ModelDefaults = ModelDefaults()) -> DVDPipeline:
        """A pipeline around an existing `DVDModel` (sharing its modules), e.g. to `save_pretrained` it with its
        inference `defaults`."""
        return cls(
            model.transformer,
            model.vae,
            tau=model.tau,
            defaults=defaults.as_config(),
            condition=model.backbone.condition,
            objective=model.objective,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' `save_pretrained` (the folder is made if missing), refusing a path that is not a folder; the
        backbone's empty condition, where it has one, goes beside model_index.json (`CONDITION_FILE`)."""
        if os.path.lexists(save_directory) and not os.path.isdir(save_directory):
            raise ValueError(
                f"`save_directory` {os.fsdecode(save_directory)} exists and is not a folder: give a folder path"
            )
        super().save_pretrained(save_directory, **kwargs)
        condition = self.model.backbone.condition
        if condition is not None:
            tensors = {CONDITION_KEY: condition.detach().to("cpu", torch.float32).contiguous()}
            save_file(tensors, Path(save_directory) / CONDITION_FILE)

    def fit_settings(self, settings: VideoSettings) -> VideoSettings:
        """`settings` for this model: sizes rounded to its spatial stride; DVDError when the window does not fit
        its backbone's frame rule (shorter last windows are padded; a full window never is)."""
        rule = self.model.frame_rule
        if not rule.fits(settings.window):
            nearest = " or ".join(str(count) for count in rule.nearest(settings.window))
            raise DVDError(
                f"window {settings.window} does not fit the {self.model.family} backbone's frame rule {rule} "
                f"(clips of 1 + {rule.stride}n frames): use --window {nearest}"
            )
        return replace(settings, spatial_stride=self.model.spatial_stride)

    def set_sampling(self, steps: int | None = None, seed: int | None = None) -> None:
        """How a generative model samples from now on (`dvd predict --steps --seed`); None keeps the current value.
        DVDError for a regression model given either, and for steps below 1 or a negative seed."""
        if steps is None and seed is None:
            return
        if self.sampling is None:
            raise DVDError(
                f"--steps and --seed sample a generative DVD model, but {self.weights_id} is a regression model "
                "(one deterministic pass per window): drop --steps and --seed"
            )
        self.sampling = Sampling(
            self.sampling.steps if steps is None else steps, self.sampling.seed if seed is None else seed
        )

    def sampling_meta(self) -> dict[str, object]:
        """What meta.json records about sampling: objective, steps and seed of a generative model; nothing else."""
        return {} if self.sampling is None else self.sampling.as_meta()

    @torch.inference_mode()
    def predict_windows(self, windows: list[np.ndarray], sampling: Sampling | None = None) -> list[np.ndarray]:
        """Several windows of equal shape in one batch; each [T, H, W, 3] -> disparity [T, H, W] float32.
        A generative model samples with `sampling` (default: the pipeline's, `set_sampling`)."""
        if not windows:
            return []
        sampling = sampling or self.sampling
        timer = self.stage_timer
        timer.count_windows(len(windows))
        with timer.stage(TRANSFER):
            pixels = [_window_tensor(w, self.model.spatial_stride) for w in windows]
            if len({p.shape for p in pixels}) != 1:
                raise ValueError("windows in one batch must share their shape; predict them separately")
            length = pixels[0].shape[1]
            stacked = torch.from_numpy(
                self._host_inputs.empty((len(pixels), *pixels[0].shape), pixels[0].numpy().dtype)
            )
            torch.stack(pixels, out=stacked)
            sampled = {}
            if sampling is not None:
                generators = [window_generator(sampling.seed, window.numpy()) for window in stacked]
                sampled = {"steps": sampling.steps, "generators": generators}
            batch = self.model.frame_rule.pad(stacked).to(self._execution_device)
            # 8-bit windows travel as uint8, a quarter of the bytes, and become [0, 1] floats where the model runs.
            disparity = self.model(unit_tensor(batch), stage=timer.stage, **sampled)[:, :length]
            check_finite_output(disparity, self.model.dtype)
            if disparity.device.type == "cpu":
                return list(disparity.float().numpy())  # the model's own output: no copy to make
            host = self._host_outputs.empty(tuple(disparity.shape), np.float32)
            torch.from_numpy(host).copy_(disparity)
            return list(host)

    def predict_window(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """One window of frames ([T, H, W, 3] or [T, 3, H, W]; uint8, uint16 or float in [0, 1]; any T >= 1; H and W
        multiples of the model's spatial stride, 16 for Wan2.1) -> disparity [T, H, W] float32."""
        return self.predict_windows([frames])[0]

    def __call__(
        self,
        video: VideoInput,
        *,
        height: int | None = None,
        width: int | None = None,
        window: int | None = None,
        overlap: int | None = None,
        stitch: str = DEFAULT_STITCH,
        batch_windows: int = 1,
        cuts: str | None = None,
        cut_threshold: float = DEFAULT_CUT_THRESHOLD,
        cut_frames: tuple[int, ...] = (),
        max_frames: int | None = None,
        stride: int = 1,
        keep_model_size: bool = False,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> DVDPipelineOutput | tuple:
        """Disparity for a whole video, held in memory (use `stream` for long videos).

        video: a path (video file, image folder, image), an array or tensor [T, H, W, 3] or [T, 3, H, W] (uint8,
            uint16 or float in [0, 1]), a list of PIL images, or an iterable of frames.
        height, width: minimum model size; frames are scaled to cover it, sides rounded up to multiples of the
            model's spatial stride (16 for Wan2.1).
        window, overlap, stitch, batch_windows: as the `dvd predict` flags (`dvd predict --help`); the window fits
            the backbone's frame rule (1 + 4n frames for Wan).
            Height, width, window and overlap left at None are the model's own defaults (`model_defaults`; the
            proof model's are 64x64, window 5, overlap 2), else its backbone's window and overlap, else dvd's:
            480x640, window 81, overlap 21.
        cuts, cut_threshold, cut_frames: shots, as the `dvd predict` flags --cuts, --cut-threshold, --cut-frames;
            cuts=None is "auto" for a video file path and "off" for anything else.
        max_frames, stride: take every `stride`-th frame, at most `max_frames` of them.
        keep_model_size: return the prediction at the model size instead of the source size.
        num_inference_steps, generator: a generative model's Euler steps and the generator its seed is drawn from
            (once per call; each window's noise follows from that seed and the window, `dvd.pipeline.sampling`);
            None: the pipeline's own (`set_sampling`; 10 steps, seed 0 unless set). A regression model takes neither.
        output_type: "np" (numpy) or "pt" (torch tensor on the CPU).
        """
        if output_type not in ("np", "pt"):
            raise ValueError(f'`output_type` must be "np" or "pt", got {output_type!r}')
        engine, video_frames, out_hw = self._prepare(
            video,
            height=height,
            width=width,
            window=window,
            overlap=overlap,
            stitch=stitch,
            batch_windows=batch_windows,
            cuts=cuts,
            cut_threshold=cut_threshold,
            cut_frames=tuple(cut_frames),
            max_frames=max_frames,
            stride=stride,
            keep_model_size=keep_model_size,
            num_inference_steps=num_inference_steps,
            generator=generator,
        )
        frames = list(engine.run(video_frames.frames, video_frames.size, out_hw))
        prediction = np.stack(frames) if frames else np.empty((0, *out_hw), np.float32)
        if output_type == "pt":
            prediction = torch.from_numpy(prediction)
        if not return_dict:
            return (prediction,)
        fps = None if video_frames.rate is None else float(video_frames.rate)
        return DVDPipelineOutput(
            prediction=prediction, fps=fps, model_size=engine.settings.model_size(video_frames.size)
        )

    def stream(self, video: VideoInput, **settings) -> Iterator[np.ndarray]:
        """Like `__call__` (same keyword arguments but `output_type` and `return_dict`), but yields each frame's
        disparity [H, W] float32 as soon as it is final, in bounded memory however long the video is."""
        engine, video_frames, out_hw = self._prepare(video, **settings)
        return engine.run(video_frames.frames, video_frames.size, out_hw)

    def _prepare(
        self,
        video: VideoInput,
        max_frames: int | None = None,
        stride: int = 1,
        keep_model_size: bool = False,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        **video_settings,
    ) -> tuple[VideoEngine, Frames, tuple[int, int]]:
        """The engine for these settings, the checked input, and the output size."""
        settings = VideoSettings(**{**video_settings, **self.model_defaults.resolve(video_settings)})
        try:
            settings.validate()
            settings = self.fit_settings(settings)
            sampling = self._call_sampling(num_inference_steps, generator)
        except DVDError as error:
            raise ValueError(str(error)) from None
        video_frames = check_inputs(video, max_frames, stride)
        settings = settings.for_input(video_frames.kind)
        out_hw = settings.model_size(video_frames.size) if keep_model_size else video_frames.size
        predict = self.predict_windows if sampling is None else partial(self.predict_windows, sampling=sampling)
        return VideoEngine(predict, settings), video_frames, out_hw

    def _call_sampling(self, steps: int | None, generator: torch.Generator | None) -> Sampling | None:
        """The sampling of one call: `num_inference_steps` and a seed drawn from `generator`, each defaulting to the
        pipeline's; None for a regression model, which takes neither."""
        if self.sampling is None:
            if steps is not None or generator is not None:
                raise DVDError(
                    "num_inference_steps and generator sample a generative DVD model; this one is a regression model "
                    "(one deterministic pass per window): leave them out"
                )
            return None
        seed = self.sampling.seed if generator is None else seed_from(generator)
        return Sampling(self.sampling.steps if steps is None else steps, seed)


def _window_tensor(frames: np.ndarray | torch.Tensor, stride: int) -> torch.Tensor:
    """[T, H, W, 3] or [T, 3, H, W] frames -> [3, T, H, W], uint8 or float32 in [0, 1] (`window_as_model_pixels`);
    ValueError for other shapes and for sides that are not multiples of the model's `stride`."""
    unit = window_as_model_pixels(frames)
    height, width = unit.shape[1:3]
    if height % stride or width % stride:
        raise ValueError(f"`frames` are {height}x{width}, not multiples of {stride}: resize first (dvd.data.raster)")
    return torch.from_numpy(unit).permute(3, 0, 1, 2)


# `DiffusionPipeline.from_pretrained` resolves the class name in model_index.json among diffusers' own attributes;
# a pipeline from another package is otherwise only reachable as remote code (a .py file in the saved folder and
# `trust_remote_code=True`). Registering the name makes a saved folder load with plain diffusers once dvd's
# pipeline is imported (`from dvd import DVDPipeline`).
setattr(diffusers, DVDPipeline.__name__, DVDPipeline)


def pipeline_folder_problem(folder: Path) -> str | None:
    """None if `folder` is a pipeline folder dvd wrote (`save_pretrained` of a DVDPipeline, or the legacy layout
    with dvd_config.json) and holds nothing else, else why not: `dvd convert --overwrite` and training exports
    replace only such folders."""
    try:
        index = json.loads((folder / PIPELINE_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = None
    ours = isinstance(index, dict) and index.get("_class_name") == DVDPipeline.__name__
    if not ours and not (folder / LEGACY_CONFIG).is_file():
        return f"it has no {PIPELINE_INDEX} of a DVDPipeline"
    return foreign_entries(folder, [PIPELINE_INDEX, LEGACY_CONFIG, CONDITION_FILE, "transformer", "vae"])
