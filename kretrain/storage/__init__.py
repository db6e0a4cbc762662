"""The object store as a package: locations, errors, transports (obstore, boto3), local files, mirroring."""

from kretrain.storage.errors import (
    AccessDenied,
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    UnsafeKeyError,
)
from kretrain.storage.localfs import PART_SUFFIX, UNSAFE_KEY_CATEGORIES, safe_local_path, safe_local_paths
from kretrain.storage.location import S3Location, join_uri, parse_s3_uri
from kretrain.storage.manifest import MANIFEST_NAME, read_manifest
from kretrain.storage.mirror import SyncResult
from kretrain.storage.parallel import parallel_map
from kretrain.storage.store import ObjectStore
from kretrain.storage.transport import ObjectInfo

__all__ = [
    "MANIFEST_NAME",
    "PART_SUFFIX",
    "UNSAFE_KEY_CATEGORIES",
    "AccessDenied",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectTooLarge",
    "PreconditionFailed",
    "S3Location",
    "StoreError",
    "StoreUnavailable",
    "SyncResult",
    "UnsafeKeyError",
    "join_uri",
    "parallel_map",
    "parse_s3_uri",
    "read_manifest",
    "safe_local_path",
    "safe_local_paths",
]
