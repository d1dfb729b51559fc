"""Targets as data: one TOML file per target, validated against one schema."""

from __future__ import annotations

from edgekit.targets._schema import (
    SCHEMA,
    Target,
    list_targets,
    load_target,
    run_analysis,
    target_availability,
    target_names,
    validate_target,
)

__all__ = [
    "SCHEMA",
    "Target",
    "list_targets",
    "load_target",
    "run_analysis",
    "target_availability",
    "target_names",
    "validate_target",
]
