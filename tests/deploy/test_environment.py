"""Every environment variable the image or Terraform sets is one the service
reads: a misspelt name is silently ignored and the default (a SQLite file in
the container, a throw-away signing key) quietly takes its place."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from gateway.settings import from_environment
from gateway.stripe import settings as stripe_settings
from tests.deploy.deploy_files import dockerfile_stages, env_assignments, resolve, resources
from tests.deploy.deploy_files import terraform_locals as tf_locals

# Read by the Python interpreter or the shell, not by the service.
INTERPRETER_VARIABLES = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.fixture(scope="module")
def names_read() -> frozenset[str]:
    """Names the settings modules look up, found by running them."""
    environ = RecordingEnvironment()
    from_environment(environ)
    stripe_settings.load(None, environ)
    assert "BILLING_STORE" in environ.asked and "STRIPE_WEBHOOK_SECRET" in environ.asked
    return frozenset(environ.asked)


def _dockerfile_env() -> dict[str, str]:
    final_stage = dockerfile_stages()[-1]
    env: dict[str, str] = {}
    for instruction in final_stage:
        if instruction.keyword == "ENV":
            env.update(env_assignments(instruction.arguments))
    return env


def _env_blocks(node: Any) -> Iterator[dict[str, Any]]:
    """Every literal `env { name = ... }` block anywhere in a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (block for block in value if isinstance(block, dict))
            else:
                yield from _env_blocks(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_blocks(item)


def _terraform_env_names() -> set[str]:
    local_values = tf_locals()
    names = set(local_values["service_env"]) | set(local_values["secret_env"].values())
    for kind in ("google_cloud_run_v2_service", "google_cloud_run_v2_job"):
        for body in resources(kind).values():
            for block in _env_blocks(body):
                name = str(block["name"])
                if not name.startswith("${"):  # dynamic blocks: covered by the locals above
                    names.add(name)
    return names


def test_the_recorder_sees_what_settings_read() -> None:
    environ = RecordingEnvironment()
    from_environment(environ)
    # settings.py names the variable in its own error messages too.
    assert {"BILLING_ADMISSION_QUEUE_MAX", "BILLING_RECONCILE_INTERVAL_S"} <= environ.asked


def test_dockerfile_sets_only_variables_the_service_reads(names_read: frozenset[str]) -> None:
    unknown = set(_dockerfile_env()) - names_read - INTERPRETER_VARIABLES
    assert not unknown, f"the image sets variables nothing reads: {sorted(unknown)}"


def test_terraform_sets_only_variables_the_service_reads(names_read: frozenset[str]) -> None:
    unknown = _terraform_env_names() - names_read
    assert not unknown, f"Terraform sets variables nothing reads: {sorted(unknown)}"


def test_production_configuration_is_complete() -> None:
    """Without these the service falls back to embedded defaults that are
    wrong on Cloud Run: a per-instance SQLite ledger, a signing key that
    differs per instance and dies with it, a generated admin token."""
    env = dict(_dockerfile_env())
    env.update({name: "set" for name in _terraform_env_names()})
    for name in (
        "BILLING_STORE",
        "BILLING_READ_MODEL",
        "BILLING_BROADCAST",
        "BILLING_ARCHIVE",
        "BILLING_SIGNING_KEY",
        "BILLING_ADMIN_TOKEN",
    ):
        assert name in env, f"{name} is not set for Cloud Run"
    assert _dockerfile_env()["BILLING_HOST"] == "0.0.0.0", "Cloud Run cannot reach 127.0.0.1"


def test_terraform_environment_builds_valid_settings() -> None:
    """The values Terraform passes, at the variables' defaults, pass the
    service's own validation (a bad one is exit 2 at every boot)."""
    simple = re.compile(r"^[^?*]*$")  # references only: no conditional, no arithmetic
    env = {
        name: resolve(str(value))
        for name, value in tf_locals()["service_env"].items()
        if simple.match(str(value))
    }
    assert {"BILLING_STORE", "BILLING_DRAIN_TIMEOUT_S", "BILLING_ADMISSION_QUEUE_MAX"} <= set(env)
    env.update(_dockerfile_env())
    settings = from_environment(env)
    assert settings.store_url is not None and settings.store_url.startswith("spanner://")
    assert settings.host == "0.0.0.0"
    assert settings.drain_timeout_s < 10, "Cloud Run kills the instance 10 s after SIGTERM"
