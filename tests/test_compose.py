"""
docker-compose.yml validates with Debian's docker-compose (no Docker engine needed: `config -q`
only parses and checks the file), for the default services and for every profile.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yml"


def _profiles() -> list[str]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return sorted({p for s in services.values() for p in s.get("profiles", [])})


def test_the_file_names_the_profiles_the_docs_promise():
    assert {"sentinel", "cluster", "monitoring"} <= set(_profiles())


@pytest.mark.parametrize("profile", [None, *_profiles()])
def test_compose_file_validates(profile):
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)"
    args = [binary, "-f", str(COMPOSE)] + (["--profile", profile] if profile else []) + ["config", "-q"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
