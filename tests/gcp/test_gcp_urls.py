"""Store URL parsing (no emulator needed)."""

from __future__ import annotations

import pytest

from ledger.gcp_urls import (
    FirestoreUrl,
    GcsUrl,
    PubSubUrl,
    SpannerUrl,
    UrlError,
    parse_firestore_url,
    parse_gcs_url,
    parse_pubsub_url,
    parse_spanner_url,
)


def test_valid_urls_parse_and_round_trip() -> None:
    spanner = parse_spanner_url("spanner://projects/my-proj/instances/main/databases/ledger")
    assert spanner == SpannerUrl("my-proj", "main", "ledger")
    assert parse_spanner_url(str(spanner)) == spanner
    assert parse_firestore_url("firestore://projects/my-proj") == FirestoreUrl(
        "my-proj", "(default)", "receipts"
    )
    assert parse_firestore_url(
        "firestore://projects/my-proj/databases/read-model?collection=r2"
    ) == FirestoreUrl("my-proj", "read-model", "r2")
    assert parse_pubsub_url("pubsub://projects/my-proj/topics/receipts") == PubSubUrl(
        "my-proj", "receipts"
    )
    assert parse_gcs_url("gs://vexa-archive") == GcsUrl("vexa-archive", "")
    assert parse_gcs_url("gs://vexa-archive/receipts/v1/") == GcsUrl("vexa-archive", "receipts/v1/")


@pytest.mark.parametrize(
    ("parse", "url"),
    [
        (parse_spanner_url, "sqlite:ledger.db"),
        (parse_spanner_url, "spanner://projects/my-proj/instances/main"),
        (parse_spanner_url, "spanner://projects/my-proj/instances/i/databases/ledger"),
        (parse_spanner_url, "spanner://projects/my-proj/instances/main/databases/Ledger"),
        (parse_spanner_url, "spanner://projects/my-proj/instances/main/databases/l?x=1"),
        (parse_firestore_url, "firestore://projects/my-proj?collection=a/b"),
        (parse_firestore_url, "firestore://projects/my-proj?colection=r"),
        (parse_pubsub_url, "pubsub://projects/my-proj/subscriptions/s"),
        (parse_gcs_url, "gs://"),
        (parse_gcs_url, "gs://bucket/../etc"),
    ],
)
def test_malformed_urls_are_refused(parse: object, url: str) -> None:
    with pytest.raises(UrlError):
        parse(url)  # type: ignore[operator]
