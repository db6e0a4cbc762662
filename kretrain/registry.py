"""Model registry on S3: immutable versions, a conditionally written incumbent pointer, promotion history."""

from __future__ import annotations

from kretrain.registry_errors import (  # callers catch them from kretrain.registry too
    ConditionalWritesIgnored,
    IncumbentChanged,
    InvalidRunRecord,
    RegistryError,
    TamperedWeights,
    VersionExists,
    VersionNotFound,
)
from kretrain.registry_incumbent import RegistryIncumbent
from kretrain.registry_layout import now_rfc3339
from kretrain.registry_runs import RegistryRuns
from kretrain.registry_versions import Lineage
from kretrain.verified import sha256_file as sha256_file  # re-exported (artifacts, tests)

__all__ = [
    "ConditionalWritesIgnored",
    "IncumbentChanged",
    "InvalidRunRecord",
    "Lineage",
    "Registry",
    "RegistryError",
    "TamperedWeights",
    "VersionExists",
    "VersionNotFound",
    "now_rfc3339",
    "sha256_file",
]


class Registry(RegistryIncumbent, RegistryRuns):
    """A model registry under `uri` (`s3://bucket/prefix`); see docs/internals.md for the layout.

    - Versions are immutable: `versions/<v>/version.json` is written last with If-None-Match and is the
      commit marker; re-registering the same version with the same sha256 returns the existing ref.
    - `incumbent.json` is only ever replaced by a conditional write (If-None-Match for the first
      promotion, If-Match on its ETag afterwards), so of several racing promotions exactly one wins;
      the others get IncumbentChanged.
    - Every pointer carries `seq` (previous seq + 1) and the whole history entry; after winning the
      conditional write, the entry is written to `history/<seq:08d>.json` with If-None-Match. An entry
      a crashed writer did not get to write is restored from the pointer by the next reader or
      writer, so the history has exactly one entry per successful promotion or rollback.
    """
