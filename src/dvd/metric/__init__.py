"""Metric depth and 3D from DVD's disparity: a metric image model on keyframes, one robust scale and shift per shot,
the camera's intrinsics, and point clouds.

`dvd predict --metric MODEL [--save ply]` runs it after the disparity of each input is complete
(`dvd.metric.post_pass`); from Python, pass ``metric=MetricSettings(model=...)`` to
`dvd.jobs.outputs.predict_to_folder`, where the model is a Hub id, a local folder, or any object with
``predict(frames) -> metres`` (`MetricModel`). Only the light settings are imported here, so that the command line
starts instantly.
"""

from dvd.metric.settings import MetricModel, MetricPrediction, MetricSettings

__all__ = ["MetricModel", "MetricPrediction", "MetricSettings"]
