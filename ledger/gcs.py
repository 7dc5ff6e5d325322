"""Cloud Storage receipt archive (the ReceiptArchive port).

One object per receipt, `PREFIX/CUSTOMER/SEQ-RECEIPT_ID.json` (ids escaped) (seq zero-padded
so name order is chain order), whose body is the signed receipt JSON exactly
as served and whose custom metadata holds the index fields. Objects are
written with `ifGenerationMatch=0` (create-only): appending a receipt again
is a no-op and an archived object is never rewritten. The bucket's retention
policy (7 years for receipts) makes Cloud Storage refuse deletes and
overwrites until it expires; `set_retention` sets it.

The receipt log's signed checkpoints are objects too, one per checkpoint,
`PREFIX/~log/checkpoints/TREE_SIZE-ROOT_HEX.jws` (size zero-padded so name
order is tree order), whose body is the compact JWS and whose metadata holds
its index fields. No customer folder can be `~log/`: an escaped id has "~"
only before two upper-case hex digits.

gcp-storage-emulator (what the tests run on) stores the retention policy and
reports it back, but enforces neither it nor `ifGenerationMatch`: there a
second append rewrites the object with identical bytes (new generation) and
deletes succeed. Both guarantees hold only on real Cloud Storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

import structlog
from google.api_core import exceptions as gexc
from google.cloud.storage import Client as StorageClient

from ledger._gcp_client import Lifecycle
from ledger._gcp_receipts import receipt_from_text_fields, receipt_text_fields
from ledger.checkpoint_codec import checkpoint_from_text_fields, checkpoint_text_fields
from ledger.errors import StoreUnavailable, check_invariant
from ledger.gcp_urls import parse_gcs_url
from ledger.model import LogCheckpoint, StoredReceipt

__all__ = ["CHECKPOINT_FOLDER", "RECEIPT_RETENTION_S", "GcsArchive"]

log = structlog.get_logger(__name__)

request_timeout_s: Final = 60.0
seq_digits: Final = 16  # 10**16 receipts per customer: beyond any chain
tree_size_digits: Final = 20  # 10**20 leaves: beyond any log
CHECKPOINT_FOLDER: Final = "~log/checkpoints/"
_GCS_LIST_OBJECTS_PER_PAGE_MAX: Final = 1_000  # fixed: Cloud Storage lists at most 1,000 a page
RECEIPT_RETENTION_S: Final = 7 * 366 * 24 * 3600  # seven years, leap days included

_UNAVAILABLE: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.BadGateway,
    ConnectionError,
    TimeoutError,
)


_SAFE_RE: Final = re.compile(r"[^A-Za-z0-9_.\-]")


_ESCAPED_RE: Final = re.compile(r"(?:~[0-9A-F]{2})+")


def _unescape(name: str) -> str:
    """The inverse of `_escape`."""
    return _ESCAPED_RE.sub(
        lambda m: bytes.fromhex(m.group().replace("~", "")).decode("utf-8"), name
    )


def _escape(identifier: str) -> str:
    """Injective, "/"-free and "%"-free: a "/" in an id must not fold one
    customer into another's folder, and "%" names trip up some tools (the
    storage emulator's download links among them). Each other byte -> ~XX."""
    return _SAFE_RE.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), identifier)


class GcsArchive:
    """ReceiptArchive on Cloud Storage.

    `GcsArchive.open("gs://BUCKET[/PREFIX]", create_bucket=False,
    retention_period_s=None)`, or wrap a `storage.Client`.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        create_bucket: bool = False,
        retention_period_s: int | None = None,
    ) -> None:
        check_invariant(prefix == "" or prefix.endswith("/"), "prefix must end with /")
        self._client = client
        self._prefix = prefix
        self._life = Lifecycle("Cloud Storage archive")
        try:
            found = client.lookup_bucket(bucket, timeout=request_timeout_s)
            if found is None:
                if not create_bucket:
                    raise StoreUnavailable(f"bucket gs://{bucket} does not exist")
                found = client.create_bucket(bucket, timeout=request_timeout_s)
                log.info("gcs.bucket_created", bucket=bucket)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        self._bucket = found
        if retention_period_s is not None:
            self.set_retention(retention_period_s)

    @classmethod
    def open(
        cls, url: str, *, create_bucket: bool = False, retention_period_s: int | None = None
    ) -> GcsArchive:
        parsed = parse_gcs_url(url)
        return cls(
            StorageClient(),
            parsed.bucket,
            prefix=parsed.prefix,
            create_bucket=create_bucket,
            retention_period_s=retention_period_s,
        )

    # -- retention ---------------------------------------------------------------
    def set_retention(self, period_s: int) -> None:
        """Set the bucket's retention period (unlocked: locking is an operator's
        irreversible decision, made outside the service)."""
        check_invariant(0 < period_s <= 100 * 366 * 24 * 3600, "retention period out of range")
        self._life.check_open()
        self._bucket.retention_period = int(period_s)
        try:
            self._bucket.patch(timeout=request_timeout_s)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        log.info("gcs.retention_set", bucket=self._bucket.name, period_s=period_s)

    def retention_period_s(self) -> int | None:
        self._life.check_open()
        try:
            self._bucket.reload(timeout=request_timeout_s)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        period = self._bucket.retention_period
        return None if period is None else int(period)

    # -- the port ------------------------------------------------------------------
    def _customer_prefix(self, customer_id: str) -> str:
        return f"{self._prefix}{_escape(customer_id)}/"

    def object_name(self, receipt: StoredReceipt) -> str:
        check_invariant(0 < receipt.seq < 10**seq_digits, "seq out of range")
        receipt_id = _escape(receipt.receipt_id)
        return (
            f"{self._customer_prefix(receipt.customer_id)}"
            f"{receipt.seq:0{seq_digits}d}-{receipt_id}.json"
        )

    def append(self, receipts: Sequence[StoredReceipt]) -> None:
        self._life.check_open()
        written = 0
        for receipt in receipts:
            blob = self._bucket.blob(self.object_name(receipt))
            blob.metadata = receipt_text_fields(receipt)
            try:
                blob.upload_from_string(
                    receipt.receipt_json,
                    content_type="application/json",
                    if_generation_match=0,
                    timeout=request_timeout_s,
                )
                written += 1
            except gexc.PreconditionFailed:
                continue  # archived before: append-only, never rewritten
            except _UNAVAILABLE as error:
                raise StoreUnavailable(f"gcs: {error}") from error
        log.debug("gcs.appended", receipts=len(receipts), written=written)

    def read_customer(
        self, customer_id: str, known: Sequence[StoredReceipt] = ()
    ) -> list[StoredReceipt]:
        # `known` is not used: downloading an object costs far more than decoding it.
        self._life.check_open()
        try:
            blobs = sorted(
                self._client.list_blobs(
                    self._bucket,
                    prefix=self._customer_prefix(customer_id),
                    timeout=request_timeout_s,
                ),
                key=lambda blob: blob.name,
            )
            receipts = [
                receipt_from_text_fields(
                    blob.metadata or {}, blob.download_as_bytes(timeout=request_timeout_s)
                )
                for blob in blobs
            ]
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        for receipt in receipts:
            check_invariant(receipt.customer_id == customer_id, "archived under the wrong customer")
        return receipts

    def customer_ids(self) -> list[str]:
        """The customer folders under the prefix (the log's folder excluded)."""
        self._life.check_open()
        try:
            listing = self._client.list_blobs(
                self._bucket, prefix=self._prefix, delimiter="/", timeout=request_timeout_s
            )
            for _ in listing:  # the folders are known once the pages are read
                pass
            folders = set(listing.prefixes)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        names = (folder[len(self._prefix) : -1] for folder in folders)
        return sorted(_unescape(name) for name in names if name and name != "~log")

    def iter_customer(self, customer_id: str) -> Iterator[StoredReceipt]:
        """In name order (seq order), a listing page at a time."""
        self._life.check_open()
        try:
            for blob in self._client.list_blobs(
                self._bucket,
                prefix=self._customer_prefix(customer_id),
                page_size=_GCS_LIST_OBJECTS_PER_PAGE_MAX,
                timeout=request_timeout_s,
            ):
                receipt = receipt_from_text_fields(
                    blob.metadata or {}, blob.download_as_bytes(timeout=request_timeout_s)
                )
                check_invariant(
                    receipt.customer_id == customer_id, "archived under the wrong customer"
                )
                yield receipt
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error

    # -- the receipt log's checkpoints ------------------------------------------------
    def checkpoint_object_name(self, checkpoint: LogCheckpoint) -> str:
        check_invariant(0 < checkpoint.tree_size < 10**tree_size_digits, "tree_size out of range")
        return (
            f"{self._prefix}{CHECKPOINT_FOLDER}"
            f"{checkpoint.tree_size:0{tree_size_digits}d}-{checkpoint.root_hash.hex()}.jws"
        )

    def append_checkpoints(self, checkpoints: Sequence[LogCheckpoint]) -> None:
        """Create-only, like receipts: one object per (tree_size, root_hash)."""
        self._life.check_open()
        for checkpoint in checkpoints:
            blob = self._bucket.blob(self.checkpoint_object_name(checkpoint))
            blob.metadata = checkpoint_text_fields(checkpoint)
            try:
                blob.upload_from_string(
                    checkpoint.jws.encode("ascii"),
                    content_type="application/jose",
                    if_generation_match=0,
                    timeout=request_timeout_s,
                )
            except gexc.PreconditionFailed:
                continue
            except _UNAVAILABLE as error:
                raise StoreUnavailable(f"gcs: {error}") from error
        log.debug("gcs.checkpoints_appended", checkpoints=len(checkpoints))

    def read_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        self._life.check_open()
        folder = f"{self._prefix}{CHECKPOINT_FOLDER}"
        # Names sort as (tree_size, root_hash), and a listing comes in name
        # order: a page starts past after_size. gcp-storage-emulator ignores
        # startOffset and page sizes, hence the skip and the stop here.
        start = f"{folder}{after_size + 1:0{tree_size_digits}d}"
        named: list[tuple[str, LogCheckpoint]] = []
        try:
            for blob in self._client.list_blobs(
                self._bucket,
                prefix=folder,
                start_offset=start,
                page_size=min(limit, _GCS_LIST_OBJECTS_PER_PAGE_MAX),
                timeout=request_timeout_s,
            ):
                if len(named) >= limit:
                    break
                if blob.name < start:
                    continue
                jws = blob.download_as_bytes(timeout=request_timeout_s)
                named.append((blob.name, checkpoint_from_text_fields(blob.metadata or {}, jws)))
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"gcs: {error}") from error
        for name, checkpoint in named:
            check_invariant(
                name == self.checkpoint_object_name(checkpoint)
                and checkpoint.tree_size > after_size,
                f"archived checkpoint {name} does not hold what its name says",
            )
        return [checkpoint for _, checkpoint in named]

    def close(self) -> None:
        self._life.close(self._client.close, "gcs.close_failed")
