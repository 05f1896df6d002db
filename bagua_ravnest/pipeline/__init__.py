"""Pipelines of stages (Ravnest, docs/pipeline.md): the model profile the
cluster planner needs, where to cut a Sequential, and the asynchronous
pipeline runtime (one stage per rank, weight stashing, activations and
gradients over the backend's send/recv), and Ravnest: clusters of such
pipelines averaging across clusters."""

from .async_pipeline import AsyncPipeline
from .cluster_average import ClusterAverager
from .partition import equal_split, split, stage_module
from .profile import calibration_seconds, profile
from .ravnest import Layout, Ravnest
from .transport import PipelineError
from .versions import Version, VersionStore

__all__ = ["AsyncPipeline", "ClusterAverager", "Layout", "PipelineError", "Ravnest", "Version", "VersionStore", "calibration_seconds", "equal_split",
           "profile", "split", "stage_module"]
