"""The image runs `billing serve` as a non-root user, on Cloud Run's PORT,
with billing as PID 1 so SIGTERM reaches the service's own drain."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway.cli import build_parser
from tests.deploy.deploy_files import REPO, Instruction, dockerfile_stages


def _final(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile_stages()[-1] if i.keyword == keyword]


def test_base_image_is_python_3_11_slim() -> None:
    for stage in dockerfile_stages():
        image = stage[0].arguments.split()[0]
        assert image == "python:3.11-slim", image


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
