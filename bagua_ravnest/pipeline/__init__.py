"""Pipelines of stages (Ravnest): the model profile the cluster planner
needs, and the first piece of the asynchronous pipeline runtime, weight
stashing (VersionStore). The runtime's loop is still to come
(docs/planner.md says what exists)."""

from .profile import calibration_seconds, profile
from .versions import Version, VersionStore

__all__ = ["Version", "VersionStore", "calibration_seconds", "profile"]
