"""Fixtures shared by the deployment tests: where the repository and the tools are, the
Terraform CLI with its offline provider mirror, and a moto server on a loopback port.

A missing tool fails the test with what to install: a deployment check that skips itself
quietly would look like a pass.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tools() -> Path:
    return Path(os.environ.get("FERRY_TOOLS", ROOT / ".ferry" / "tools"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ferry_tools() -> Path:
    return _tools()


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    path = shutil.which("terraform")
    if path is None:
        pytest.fail(
            "terraform is not on PATH: install the Terraform CLI (>= 1.9; 1.11.4 is what these "
            "tests were written with), e.g. from https://releases.hashicorp.com/terraform/"
        )
    return path


@pytest.fixture(scope="session")
def tf_plugin_dir() -> Path:
    """The offline provider mirror (`terraform init -plugin-dir`), holding hashicorp/aws."""
    mirror = Path(os.environ.get("FERRY_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    aws = mirror / "registry.terraform.io" / "hashicorp" / "aws"
    if not aws.is_dir() or not any(aws.iterdir()):
        pytest.fail(
            f"no hashicorp/aws provider in the Terraform plugin mirror {mirror}: set "
            "FERRY_TF_PLUGIN_DIR to a directory laid out as "
            "registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/terraform-provider-aws_v<version>* "
            "(e.g. made with `terraform providers mirror` on a machine with registry access)"
        )
    return mirror


@pytest.fixture(scope="session")
def terraform_env() -> dict:
    """Environment for every terraform run: no call home, no real AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.fixture(scope="session")
def checkov_bin(ferry_tools: Path) -> Path:
    path = ferry_tools / "checkov" / "bin" / "checkov"
    if not path.exists():
        pytest.fail(
            f"{path} is missing: python3 -m venv {ferry_tools}/checkov && "
            f"{ferry_tools}/checkov/bin/pip install checkov==3.3.30 (or run scripts/setup.sh)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server(ferry_tools: Path, tmp_path_factory):
    """URL of a moto server of our own on a free loopback port, for the whole session."""
    binary = ferry_tools / "venv" / "bin" / "moto_server"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run scripts/setup.sh (it installs moto server)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start on {url}:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
