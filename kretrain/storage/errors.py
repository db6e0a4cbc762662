"""The closed error hierarchy of the object store: every transport raises only these."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by the object store."""


class ObjectNotFound(StoreError, FileNotFoundError):
    """A missing object (HTTP 404 NoSuchKey); also a FileNotFoundError."""


class AccessDenied(StoreError, PermissionError):
    """The store refused the credentials or the permission (HTTP 403: AccessDenied, a bad key or signature)."""


class StoreUnavailable(StoreError):
    """The store could not be reached, or answered throttling / 5xx, on every attempt: worth a later retry."""


class UnsafeKeyError(StoreError, ValueError):
    """An object key that would map to a path outside the local directory."""


class PreconditionFailed(StoreError):
    """A conditional write (If-Match / If-None-Match) lost: HTTP 412, or 409 on concurrent writes."""


class ObjectTooLarge(StoreError):
    """An object over the size cap a reader passed (`max_bytes`); it was not read into memory.

    `size` is the object's announced size (Content-Length) or, when the server announced none or lied,
    the bytes received when reading stopped (then more than `limit`).
    """

    def __init__(self, uri: str, size: int, limit: int, *, announced: bool = True) -> None:
        what = f"is {size} bytes" if announced else f"sent more than {limit} bytes ({size} received before stopping)"
        super().__init__(f"object {uri} {what}, over the limit of {limit} bytes for it; not read")
        self.uri = uri
        self.size = size
        self.limit = limit


# Statuses worth another try: throttling and server-side failures.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# S3 error codes that mean the credentials or the permission were refused.
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403"})
# S3 error codes of throttling and timeouts (retryable whatever the status says).
RETRY_CODES = frozenset({"SlowDown", "Throttling", "RequestTimeout"})


def error_for_status(status: int, code: str, detail: str, what: str) -> StoreError:
    """The StoreError for an S3 error answer (`status`, error `code`) to a request on `what` (a URI).

    404 without NoSuchBucket is ObjectNotFound; 403 or a denial code AccessDenied; 429/5xx or a
    throttling code StoreUnavailable; anything else a plain StoreError. `detail` ends the message.
    """
    if status == 404 and code != "NoSuchBucket":
        return ObjectNotFound(f"no such object: {what}")
    if status == 403 or code in DENIED_CODES:
        return AccessDenied(f"S3 denied access to {what}: {detail}")
    if status in RETRY_STATUS or status >= 500 or code in RETRY_CODES:
        return StoreUnavailable(f"S3 request for {what} failed after every attempt: {detail}")
    return StoreError(f"S3 request for {what} failed: {detail}")
