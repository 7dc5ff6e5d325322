"""The Terraform provisions what the code opens: the URLs parse with the
service's own parsers, the Firestore index serves the read model's query,
the archive keeps receipts seven years, and probes hit the real routes."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from crypto import kms_key_name
from crypto._kms import KMS_ALGORITHMS
from gateway.cli import build_parser
from gateway.settings import from_environment
from ledger import gcp_urls
from ledger.firestore import FirestoreReadModel
from ledger.gcs import RECEIPT_RETENTION_S
from tests.deploy.deploy_files import (
    REPO,
    TERRAFORM,
    one,
    resolve,
    resources,
    terraform_file,
    terraform_locals,
    terraform_variables,
)


@pytest.mark.parametrize("name", ["main.tf", "variables.tf", "outputs.tf", "versions.tf"])
def test_terraform_files_parse(name: str) -> None:
    assert terraform_file(name), f"{name} is empty"


def test_every_reference_to_a_variable_is_declared() -> None:
    declared = set(terraform_variables())
    used = set()
    for path in TERRAFORM.glob("*.tf"):
        used |= set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", path.read_text()))
    assert used <= declared, f"undeclared variables: {sorted(used - declared)}"


@pytest.mark.parametrize(
    ("local_name", "parse"),
    [
        ("store_url", gcp_urls.parse_spanner_url),
        ("read_model_url", gcp_urls.parse_firestore_url),
        ("broadcast_url", gcp_urls.parse_pubsub_url),
        ("archive_url", gcp_urls.parse_gcs_url),
    ],
)
def test_store_urls_parse_with_the_service_parsers(local_name: str, parse: Any) -> None:
    parse(resolve(terraform_locals()[local_name]))


def test_migrate_job_runs_billing_migrate_on_the_service_ledger() -> None:
    job = one(resources("google_cloud_run_v2_job")["migrate"]["template"])
    container = one(one(job["template"])["containers"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"] == ["billing"] and "billing" in scripts
    args = build_parser().parse_args([resolve(str(arg)) for arg in container["args"]])
    assert args.command == "migrate"
    assert args.store == resolve(terraform_locals()["store_url"])


def _listing_query() -> tuple[str, list[tuple[str, str]], list[str]]:
    """Run the read model's listing against a recording client: (collection,
    [(field, op)], [order_by field])."""

    class Query:
        def __init__(self) -> None:
            self.filters: list[tuple[str, str]] = []
            self.orders: list[str] = []

        def where(self, *, filter: FieldFilter) -> Query:
            self.filters.append((filter.field_path, filter.op_string))
            return self

        def order_by(self, field: str, direction: str = "ASCENDING") -> Query:
            assert direction == "ASCENDING"
            self.orders.append(field)
            return self

        def limit(self, count: int) -> Query:
            return self

        def get(self, timeout: float) -> list[Any]:
            return []

    class Client:
        def __init__(self) -> None:
            self.query = Query()
            self.collections: list[str] = []

        def collection(self, name: str) -> Query:
            self.collections.append(name)
            return self.query

    client = Client()
    collection = gcp_urls.parse_firestore_url(resolve(terraform_locals()["read_model_url"]))
    FirestoreReadModel(client, collection=collection.collection).list_receipts("cus_1", 0, 10)
    return client.collections[0], client.query.filters, client.query.orders


def test_firestore_index_serves_the_receipt_listing_query() -> None:
    collection, filters, orders = _listing_query()
    equality = [field for field, op in filters if op == "=="]
    ranged = [field for field, op in filters if op != "=="]
    assert equality and orders, "the recorder saw no query"
    # Firestore's rule: equality fields first, then the range / order-by field.
    indexes = resources("google_firestore_index")
    served = []
    for index in indexes.values():
        fields = [(f["field_path"], f["order"]) for f in index["fields"]]
        fields = [f for f in fields if f[0] != "__name__"]
        head, tail = fields[: len(equality)], fields[len(equality) :]
        if (
            resolve(index["collection"]) == collection
            and {name for name, _ in head} == set(equality)
            and [name for name, _ in tail] == list(dict.fromkeys(ranged + orders))
            and all(order == "ASCENDING" for _, order in tail)
        ):
            served.append(index)
    assert served, f"no Firestore index on {collection} for {filters} order by {orders}"


def test_archive_bucket_keeps_receipts_seven_years() -> None:
    bucket = resources("google_storage_bucket")["archive"]
    policy = one(bucket["retention_policy"])
    assert int(resolve(str(policy["retention_period"]))) == RECEIPT_RETENTION_S
    assert bucket["force_destroy"] is False
    assert bucket["public_access_prevention"] == "enforced"


def test_receipt_subscriptions_keep_chain_order() -> None:
    for name, subscription in resources("google_pubsub_subscription").items():
        assert subscription["enable_message_ordering"] is True, name


def test_probes_hit_the_service_health_routes() -> None:
    service = resources("google_cloud_run_v2_service")["billing"]
    container = one(one(service["template"])["containers"])
    startup = one(one(container["startup_probe"])["http_get"])["path"]
    liveness = one(one(container["liveness_probe"])["http_get"])["path"]
    assert (startup, liveness) == ("/readyz", "/healthz")
    from gateway import routes_public

    paths = {route.path for route in routes_public.routes if hasattr(route, "path")}
    assert {"/readyz", "/healthz", "/metrics"} <= paths
    resources_block = one(container["resources"])
    # The outbox relay and the reconciler need CPU between requests.
    assert resources_block["cpu_idle"] is False


def test_the_service_signs_with_the_hsm_key_terraform_creates() -> None:
    env = terraform_locals()["service_env"]
    assert "BILLING_SIGNING_KEY_FILE" not in env  # the private key never leaves the HSM
    uri = resolve(env["BILLING_SIGNING_KEY"])
    keys = resources("google_kms_crypto_key")
    (key_name,) = keys
    key = keys[key_name]
    assert kms_key_name(uri).startswith(resolve(f"${{google_kms_crypto_key.{key_name}.id}}"))
    assert from_environment({"BILLING_SIGNING_KEY": uri}).signing_key_uri == uri
    template = one(key["version_template"])
    assert key["purpose"] == "ASYMMETRIC_SIGN"
    assert template["protection_level"] == "HSM"
    # The default algorithm is one the KMS adapter takes, and for the alg it says.
    alg = terraform_variables()["signing_alg"]["default"]
    algorithm = terraform_locals()["kms_algorithms"][alg]
    assert KMS_ALGORITHMS[algorithm].jose_alg == alg
    for alg_name, kms_algorithm in terraform_locals()["kms_algorithms"].items():
        assert KMS_ALGORITHMS[kms_algorithm].jose_alg == alg_name


def test_the_runtime_may_sign_with_the_key_and_nothing_more() -> None:
    grants = resources("google_kms_crypto_key_iam_member")
    runtime = [g for g in grants.values() if "service_account.runtime." in str(g["member"])]
    assert [(g["role"], g["crypto_key_id"]) for g in runtime] == [
        ("roles/cloudkms.signerVerifier", "${google_kms_crypto_key.receipts.id}")
    ]
    service = resources("google_cloud_run_v2_service")["billing"]
    granted = {f"${{google_kms_crypto_key_iam_member.{name}}}" for name in grants}
    assert granted <= set(service["depends_on"]), "the service may start before it may sign"


def test_runtime_service_account_cannot_change_the_schema() -> None:
    grants = resources("google_spanner_database_iam_member").values()
    runtime_roles = {g["role"] for g in grants if "service_account.runtime." in str(g["member"])}
    assert runtime_roles == {"roles/spanner.databaseUser"}


def test_the_service_is_told_its_instance_cpus() -> None:
    # os.cpu_count() on Cloud Run sees the host; every per-CPU default
    # (signer pool, account threads) must count the instance's vCPUs.
    env = terraform_locals()["service_env"]
    assert resolve(env["BILLING_CPUS"]) == str(terraform_variables()["cpu"]["default"])
    settings = from_environment({"BILLING_CPUS": resolve(env["BILLING_CPUS"])}).validate()
    assert settings.effective_cpus == terraform_variables()["cpu"]["default"]


def test_artifact_registry_keeps_the_last_ten_and_drops_untagged_after_90_days() -> None:
    repository = resources("google_artifact_registry_repository")["billing"]
    assert repository.get("cleanup_policy_dry_run") in (False, "false")
    policies = {p["id"]: p for p in repository["cleanup_policies"]}
    keep = policies["keep-last-10"]
    assert keep["action"] == "KEEP"
    assert one(keep["most_recent_versions"])["keep_count"] == 10
    delete = policies["delete-untagged-after-90-days"]
    assert delete["action"] == "DELETE"
    condition = one(delete["condition"])
    assert condition["tag_state"] == "UNTAGGED"
    assert condition["older_than"] == f"{90 * 86_400}s"
