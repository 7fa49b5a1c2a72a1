"""Where a real dataset comes from: its reader (format) and location, as configured in params.yaml.

    data:
      sources:
        nyuv2: {format: nyuv2, path: nyuv2}            # data/raw/nyuv2/nyu_depth_v2_labeled.mat + splits.mat
        hypersim: {format: hypersim, path: hypersim, options: {fov_x_deg: 60}}

A dataset listed here is read from data/raw/<path> by the `prepare` stage instead of being generated. The format
and its options are checked when params.yaml is loaded, so a typo fails before anything runs.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class SourceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str  # a registered reader name (tasks/preprocess/readers.py: nyuv2, hypersim, rendered, replica, ...)
    path: str  # relative to data/raw/ (a folder, or NYU's .mat file); must stay inside data/
    options: dict[str, Any] = {}  # reader-specific settings, validated by the reader
    skip_bad: bool = False  # quarantine unreadable / invalid frames (listed in quarantine.csv) instead of failing

    @field_validator("path")
    @classmethod
    def _inside_data(cls, v: str) -> str:
        norm = posixpath.normpath(posixpath.join("data/raw", v.replace("\\", "/")))
        if not v.strip() or posixpath.isabs(v) or not norm.startswith("data/"):
            raise ValueError(f"{v!r} must be a path relative to data/raw/ that stays inside data/, e.g. 'nyuv2'")
        return v

    @model_validator(mode="after")
    def _known_format(self) -> SourceParams:
        from tasks.io import MetadepthError
        from tasks.preprocess.readers import get_reader  # imported here: readers pull in h5py and OpenCV

        try:
            get_reader(self.format).parse_options(self.options)
        except MetadepthError as err:
            raise ValueError(str(err)) from None
        return self

    def raw_path(self, root: Path) -> Path:
        """The dataset's location in a project checkout."""
        return root / "data" / "raw" / self.path
