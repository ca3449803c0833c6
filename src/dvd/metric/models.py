"""Metric image models through `transformers`: Depth Pro and Depth Anything V2 metric, from a Hub id or a folder.

Both load with `AutoModelForDepthEstimation.from_pretrained(NAME_OR_PATH)`, so a local `save_pretrained` folder
and a Hub id take the same path. Depth Anything is pre- and post-processed by its own `AutoImageProcessor`. Depth
Pro's image processor in transformers needs torchvision, whose wheel must match the torch build exactly (a
mismatched one breaks `import torchvision`); its preprocessing is two steps, so it is done here in torch from the
processor's own config (normalise with its mean/std, then bilinear resize to its size, as transformers does), and
its canonical inverse depth becomes metres with its field of view as in transformers' post-processing:
inverse depth = canonical · W / f, with f = (W/2) / tan(fov/2).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from dvd.errors import DVDError
from dvd.metric.settings import MetricPrediction

BATCH = 4  # keyframes per metric-model call: Depth Pro runs at 1536x1536, a few at a time fit any GPU
DEPTH_PRO = "depth_pro"
DEPTH_ANYTHING = "depth_anything"


def check_metric_model(name: str) -> tuple[str, bool]:
    """The model type of `name` ("depth_pro" or "depth_anything") and whether it estimates the field of view, read
    from its config alone, before any weights load; DVDError naming the fix for anything else."""
    from transformers import AutoConfig

    what = "Depth Pro or Depth Anything V2 metric model (a Hub id, or a folder written by save_pretrained)"
    if not Path(name).exists() and (name.startswith(("/", ".", "~")) or name.count("/") != 1):
        raise DVDError(f"--metric {name}: no such folder, and not a Hub id (owner/name): check the path")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DVDError(f"--metric {name} is not a {what}: {reason}") from None
    kind = getattr(config, "model_type", None)
    if kind == DEPTH_ANYTHING and getattr(config, "depth_estimation_type", None) != "metric":
        raise DVDError(
            f"--metric {name} is a relative (unit-free) Depth Anything model: use a metric one, such as "
            "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf, or Depth Pro (apple/DepthPro-hf)"
        )
    if kind not in (DEPTH_PRO, DEPTH_ANYTHING):
        raise DVDError(f"--metric {name} is a {kind!r} model, not a {what}")
    return kind, kind == DEPTH_PRO and bool(getattr(config, "use_fov_model", False))


class TransformersMetricModel:
    """A `MetricModel` around a transformers depth estimator; `estimates_fov`: whether it reports the field of
    view (Depth Pro with its FOV head)."""

    def __init__(self, name: str, device: str | None = None) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        from transformers.image_processing_utils import ImageProcessingMixin

        from dvd.pipeline.dvd_pipeline import resolve_device

        self.name = name
        self.kind, self.estimates_fov = check_metric_model(name)
        self.device = resolve_device(device)
        try:
            # weights_only (transformers' default, said here so that it stays): a pickle runs no code
            model = AutoModelForDepthEstimation.from_pretrained(name, weights_only=True)
            self.model = model.to(self.device).eval()
            if self.kind == DEPTH_PRO:
                self.processor_config, _ = ImageProcessingMixin.get_image_processor_dict(name)
            else:
                self.processor = AutoImageProcessor.from_pretrained(name)
        except pickle.UnpicklingError:
            raise DVDError(
                f"--metric {name}: its weights are a pickle that needs arbitrary code execution to load, which dvd "
                "refuses: use a folder with model.safetensors (what save_pretrained writes)"
            ) from None
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DVDError(
                f"--metric {name}: its weights or preprocessor_config.json could not be loaded ({reason}); a "
                "model folder needs config.json, the weights and preprocessor_config.json (save_pretrained of the "
                "model and its image processor)"
            ) from None
        self._torch = torch

    def predict(self, frames: np.ndarray) -> MetricPrediction:
        """Metres [N, H, W] at the frames' size, Depth Pro's field of view with them."""
        parts = [self._predict(frames[start : start + BATCH]) for start in range(0, len(frames), BATCH)]
        depth = np.concatenate([part.depth for part in parts])
        fov = None if parts[0].hfov_deg is None else np.concatenate([part.hfov_deg for part in parts])
        return MetricPrediction(depth, fov)

    def _predict(self, frames: np.ndarray) -> MetricPrediction:
        torch = self._torch
        height, width = frames.shape[1:3]
        with torch.inference_mode():
            if self.kind == DEPTH_PRO:
                return self._depth_pro(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2))
            inputs = self.processor(images=list(frames), return_tensors="pt", do_rescale=False).to(self.device)
            outputs = self.model(**inputs)
            results = self.processor.post_process_depth_estimation(
                outputs, target_sizes=[(height, width)] * len(frames)
            )
            depth = torch.stack([result["predicted_depth"].float().cpu() for result in results]).numpy()
        return MetricPrediction(depth)

    def _depth_pro(self, pixels):  # [N, 3, H, W] float in [0, 1]
        torch = self._torch
        config = self.processor_config
        height, width = pixels.shape[-2:]
        mean = torch.tensor(config.get("image_mean", [0.5] * 3)).view(1, 3, 1, 1)
        std = torch.tensor(config.get("image_std", [0.5] * 3)).view(1, 3, 1, 1)
        size = config.get("size", {"height": 1536, "width": 1536})
        normalised = (pixels.float() - mean) / std
        resized = torch.nn.functional.interpolate(
            normalised, size=(size["height"], size["width"]), mode="bilinear", align_corners=False, antialias=False
        )
        outputs = self.model(pixel_values=resized.to(self.device))
        canonical = torch.nn.functional.interpolate(
            outputs.predicted_depth.float()[:, None], size=(height, width), mode="bilinear", align_corners=False
        )[:, 0].cpu()
        fov = outputs.field_of_view
        if fov is None:  # no FOV head: transformers takes the canonical inverse depth as is
            return MetricPrediction(1.0 / canonical.clamp(1e-4, 1e4).numpy())
        fov = fov.float().cpu()
        inverse = canonical * (2 * torch.tan(torch.deg2rad(fov) / 2)).view(-1, 1, 1)  # canonical * W / f
        return MetricPrediction((1.0 / inverse.clamp(1e-4, 1e4)).numpy(), fov.numpy())


def focal_corrected(prediction: MetricPrediction, hfov_deg: float) -> np.ndarray:
    """The depth of a model whose metric scale follows its own focal estimate, at a known field of view: depth is
    proportional to the focal length (Depth Pro: inverse depth = canonical · W / f)."""
    if prediction.hfov_deg is None:
        return prediction.depth
    known = 1 / math.tan(math.radians(hfov_deg) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = known * np.tan(np.radians(prediction.hfov_deg.astype(np.float64)) / 2)
    return prediction.depth * factors.astype(np.float32)[:, None, None]
