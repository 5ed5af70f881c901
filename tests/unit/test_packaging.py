"""What a release carries: the sdist and the wheel built from it hold the probes (bpf/, as the
package ebpfguard.bpf), the rules, the default config and the licence, and every sub-package.

tests/kernel/test_install.py installs such a wheel and runs it; this builds them only.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def shipped_files() -> set[str]:
    """Paths every install must have, as the wheel names them: the probes, and every file of
    the package that is not Python (rules, YARA signatures, the default config...)."""
    probes = {f"ebpfguard/bpf/{p.name}" for p in (REPO / "bpf").iterdir() if p.suffix in (".c", ".h")}
    data = {str(p.relative_to(REPO)) for p in (REPO / "ebpfguard").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert "ebpfguard/default_config.yaml" in data and "ebpfguard/rules/miner.yaml" in data
    return probes | data | {"ebpfguard/bpf/__init__.py"}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    # The build backend itself, as `python -m build --sdist` would call it (no network).
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
                   cwd=REPO, check=True, capture_output=True)
    (built,) = out.glob("ebpfguard-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def wheel_from_sdist(sdist, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as tar:
        tar.extractall(work)  # our own sdist, just built
    (source,) = work.iterdir()
    out = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("ebpfguard-*.whl")
    return built


def test_the_sdist_carries_the_probe_sources_rules_config_and_licence(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    probes = {f"bpf/{p.name}" for p in (REPO / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert probes <= names
    assert {"LICENSE", "ebpfguard/default_config.yaml", "ebpfguard/rules/miner.yaml"} <= names


def test_a_wheel_built_from_the_sdist_carries_the_probes_as_a_package(wheel_from_sdist):
    with zipfile.ZipFile(wheel_from_sdist) as wheel:
        names = set(wheel.namelist())
    missing = shipped_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert not any(name.startswith("bpf/") for name in names)  # inside the package, not beside it
    assert any(name.endswith(".dist-info/LICENSE") for name in names)


def test_every_subpackage_of_ebpfguard_is_listed_for_the_wheel():
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "ebpfguard").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["ebpfguard.bpf"] == "bpf"


def test_the_licence_is_the_apache_2_0_text_pyproject_declares():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
