"""Pipelines of stages (Ravnest): the model profile the cluster planner
needs. The asynchronous pipeline runtime itself is still to come
(docs/planner.md says what exists)."""

from .profile import calibration_seconds, profile

__all__ = ["calibration_seconds", "profile"]
