"""Data sets for training, calibration and validation."""

from __future__ import annotations

from edgekit.data._dataset import Dataset, load_dataset, representative_data

__all__ = ["Dataset", "load_dataset", "representative_data"]
