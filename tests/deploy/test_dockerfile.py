"""The image runs `billing serve` as a non-root user, on Cloud Run's PORT,
with billing as PID 1 so SIGTERM reaches the service's own drain."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gateway.cli import build_parser
from tests.deploy.deploy_files import REPO, Instruction, dockerfile_stages


def _final(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile_stages()[-1] if i.keyword == keyword]


def test_base_image_is_python_3_11_slim_pinned_by_digest() -> None:
    images = {stage[0].arguments.split()[0] for stage in dockerfile_stages()}
    (image,) = images  # one base for both stages
    name, _, digest = image.partition("@")
    assert name == "python:3.11-slim", image
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image} is not pinned by digest"


def _lock() -> dict[str, str]:
    """deploy/requirements.lock: normalized name -> exact version."""
    text = (REPO / "deploy" / "requirements.lock").read_text()
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(r"(?m)^([A-Za-z0-9_.\-]+)==([^ \\;]+)", text)
    }


def test_the_lock_pins_every_dependency_of_pyproject_with_hashes() -> None:
    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        parsed = Requirement(requirement)
        name = re.sub(r"[-_.]+", "-", parsed.name).lower()
        assert name in lock, f"{parsed.name} is not in deploy/requirements.lock"
        assert parsed.specifier.contains(lock[name]), (
            f"the lock's {parsed.name}=={lock[name]} does not satisfy {requirement!r}: "
            "run uv pip compile again (see deploy/README.md)"
        )
    text = (REPO / "deploy" / "requirements.lock").read_text()
    for block in re.split(r"(?m)^(?=[A-Za-z0-9])", text):
        if "==" in block:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_image_installs_from_the_lock_with_hashes() -> None:
    runs = [i.arguments for stage in dockerfile_stages() for i in stage if i.keyword == "RUN"]
    assert any("--require-hashes -r requirements.lock" in run for run in runs)
    assert any("--no-deps ." in run for run in runs), "the project's own install resolves again"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!deploy/requirements.lock" in ignore, ".dockerignore drops the lock"


def test_runs_as_a_non_root_user() -> None:
    users = _final("USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].arguments.split(":")[0]
    assert user not in {"root", "0"}, user


def _command() -> list[str]:
    commands = _final("CMD")
    assert len(commands) == 1 and not _final("ENTRYPOINT")
    command = json.loads(commands[0].arguments)  # exec form: no extra shell in front
    assert isinstance(command, list)
    return [str(word) for word in command]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_command_execs_billing_serve_on_cloud_run_port(tmp_path: Path) -> None:
    """Run the image's command as the container would, with a stand-in
    `billing` that reports its arguments and whether it replaced the shell."""
    fake = tmp_path / "billing"
    fake.write_text('#!/bin/sh\necho "$$"\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    command = _command()
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PORT": "9123"}
    script = command[-1] if command[:2] == ["/bin/sh", "-c"] else None
    if script is None:  # plain exec form: billing is PID 1 already
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    else:
        # `exec` must replace the shell, else SIGTERM stops at sh and the
        # service is killed without draining: the pid the stand-in prints is
        # the shell's own pid.
        wrapped = f'echo "$$"; {script}'
        output = subprocess.run(
            ["/bin/sh", "-c", wrapped], env=env, capture_output=True, text=True, check=True
        )
    lines = output.stdout.splitlines()
    if script is not None:
        shell_pid, billing_pid, *argv = lines
        assert shell_pid == billing_pid, "billing does not replace the shell (use exec)"
    else:
        _pid, *argv = lines
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    assert args.port == 9123, "the service must listen on Cloud Run's PORT"
    assert not args.dev


def test_image_holds_every_runtime_package() -> None:
    """Each package pyproject installs (bar the load tests) is copied in, and
    .dockerignore does not drop it from the build context."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include} - {"loadtest"}
    copied = {
        instruction.arguments.split()[0].strip("./")
        for stage in dockerfile_stages()
        for instruction in stage
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from")
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    if "*" in ignore:
        for name in packages | {"pyproject.toml", "README.md"}:
            assert f"!{name}/" in ignore or f"!{name}" in ignore, f".dockerignore drops {name}"


def test_no_secret_or_machine_path_in_deploy_files() -> None:
    for path in (REPO / "deploy").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "BEGIN PRIVATE KEY" not in text and "sk_live_" not in text, path
            assert str(REPO) not in text and os.path.expanduser("~") + "/" not in text, path
