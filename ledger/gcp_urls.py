"""Store URLs for the Google Cloud adapters.

    spanner://projects/P/instances/I/databases/D
    firestore://projects/P[/databases/D][?collection=C]     (D defaults to "(default)")
    pubsub://projects/P/topics/T
    gs://BUCKET[/PREFIX]

Parsing is pure: no I/O, no environment. Which endpoint a client talks to
(the real service or an emulator) is the client library's business
(`*_EMULATOR_HOST`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FirestoreUrl",
    "GcsUrl",
    "PubSubUrl",
    "SpannerUrl",
    "UrlError",
    "parse_firestore_url",
    "parse_gcs_url",
    "parse_pubsub_url",
    "parse_spanner_url",
]

# Resource id shapes, loose enough for every real id and strict enough to stop
# a path separator or a query string from sneaking into one.
_PROJECT_RE: Final = re.compile(r"[a-z][a-z0-9\-.:]{3,62}[a-z0-9]", re.ASCII)
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,62}", re.ASCII)
# Spanner's own rules: instance 2-64, database 2-30 characters.
_SPANNER_INSTANCE_RE: Final = re.compile(r"[a-z][a-z0-9\-]{0,62}[a-z0-9]", re.ASCII)
_SPANNER_DATABASE_RE: Final = re.compile(r"[a-z][a-z0-9_\-]{0,28}[a-z0-9]", re.ASCII)
_FIRESTORE_DB_RE: Final = re.compile(r"(\(default\)|[a-z][a-z0-9\-]{2,62})", re.ASCII)
_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9_\-.]{1,220}[a-z0-9]", re.ASCII)


class UrlError(ValueError):
    """A store URL that does not match its documented shape."""


@dataclass(frozen=True, slots=True)
class SpannerUrl:
    project: str
    instance: str
    database: str

    def __str__(self) -> str:
        return f"spanner://{self.database_path}"

    @property
    def database_path(self) -> str:
        return f"projects/{self.project}/instances/{self.instance}/databases/{self.database}"


@dataclass(frozen=True, slots=True)
class FirestoreUrl:
    project: str
    database: str
    collection: str = "receipts"

    def __str__(self) -> str:
        return (
            f"firestore://projects/{self.project}/databases/{self.database}"
            f"?collection={self.collection}"
        )


@dataclass(frozen=True, slots=True)
class PubSubUrl:
    project: str
    topic: str

    def __str__(self) -> str:
        return f"pubsub://{self.topic_path}"

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"


@dataclass(frozen=True, slots=True)
class GcsUrl:
    bucket: str
    prefix: str = ""  # "" or ends with "/"

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"


def _split(url: str, scheme: str) -> tuple[list[str], dict[str, list[str]]]:
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise UrlError(f"expected a {scheme}:// URL, got {url!r}")
    if parts.fragment or parts.username or parts.password or parts.port:
        raise UrlError(f"unexpected fragment or credentials in {url!r}")
    path = f"{parts.netloc}{parts.path}".strip("/")
    segments = path.split("/") if path else []
    return segments, parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)


def _pairs(url: str, segments: list[str], names: tuple[str, ...]) -> list[str]:
    shape = "/".join(f"{name}/X" for name in names)
    if len(segments) != 2 * len(names) or any(
        segments[2 * i] != name for i, name in enumerate(names)
    ):
        raise UrlError(f"expected {shape}, got {url!r}")
    return [segments[2 * i + 1] for i in range(len(names))]


def _check(value: str, pattern: re.Pattern[str], what: str, url: str) -> str:
    if not pattern.fullmatch(value):  # `$` would let a final "\n" through
        raise UrlError(f"invalid {what} {value!r} in {url!r}")
    return value


def parse_spanner_url(url: str) -> SpannerUrl:
    segments, query = _split(url, "spanner")
    if query:
        raise UrlError(f"spanner URLs take no query string: {url!r}")
    project, instance, database = _pairs(url, segments, ("projects", "instances", "databases"))
    return SpannerUrl(
        _check(project, _PROJECT_RE, "project", url),
        _check(instance, _SPANNER_INSTANCE_RE, "instance", url),
        _check(database, _SPANNER_DATABASE_RE, "database", url),
    )


def parse_firestore_url(url: str) -> FirestoreUrl:
    segments, query = _split(url, "firestore")
    if len(segments) == 2:
        segments = [*segments, "databases", "(default)"]
    project, database = _pairs(url, segments, ("projects", "databases"))
    unknown = set(query) - {"collection"}
    if unknown:
        raise UrlError(f"unknown firestore URL options {sorted(unknown)} in {url!r}")
    collection = query.get("collection", ["receipts"])[-1]
    return FirestoreUrl(
        _check(project, _PROJECT_RE, "project", url),
        _check(database, _FIRESTORE_DB_RE, "database", url),
        _check(collection, _ID_RE, "collection", url),
    )


def parse_pubsub_url(url: str) -> PubSubUrl:
    segments, query = _split(url, "pubsub")
    if query:
        raise UrlError(f"pubsub URLs take no query string: {url!r}")
    project, topic = _pairs(url, segments, ("projects", "topics"))
    return PubSubUrl(
        _check(project, _PROJECT_RE, "project", url), _check(topic, _ID_RE, "topic", url)
    )


def parse_gcs_url(url: str) -> GcsUrl:
    parts = urlsplit(url)
    if parts.scheme != "gs" or not parts.netloc:
        raise UrlError(f"expected gs://BUCKET[/PREFIX], got {url!r}")
    if parts.query or parts.fragment:
        raise UrlError(f"gs URLs take no query or fragment: {url!r}")
    prefix = parts.path.strip("/")
    if ".." in prefix.split("/") or "//" in prefix:
        raise UrlError(f"invalid object prefix in {url!r}")
    return GcsUrl(_check(parts.netloc, _BUCKET_RE, "bucket", url), f"{prefix}/" if prefix else "")
