"""README.md and docs/ say only what is true: the Cost section is the last benchmark run as
bench/readme_table.py renders it, every link and repository path resolves, each section is
there once, and the counts it quotes are the rules' and the probes' own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.readme_table import END, RESULTS, parse_cost, readme_section, render
from ebpfguard.detect.engine import load_rules
from ebpfguard.kernel.events import C

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
# Where a path written in `code` in the docs is a file of this repository.
TOP_DIRS = ("bpf/", "ebpfguard/", "tests/", "bench/", "deploy/", "dashboards/", "docs/", "scripts/", "vagrant/")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_cost_section_is_the_last_benchmark_run_as_rendered():
    assert readme_section(README.read_text()) == render(RESULTS.read_text()), (
        "README.md's Cost section is stale: python -m bench.readme_table --write")


def test_a_range_crossing_zero_is_noise_and_one_that_does_not_is_a_result():
    assert parse_cost("11,490 (-32,284–63,276) ×1.02").noise
    assert not parse_cost("5,938 (2,874–6,993) ×1.18").noise
    assert not parse_cost("-9,291 (-21,270–-3,064) ×0.98").noise


def test_every_section_is_there_once():
    headings = [line for line in README.read_text().splitlines() if line.startswith("#")]
    assert len(headings) == len(set(headings)), sorted(h for h in headings if headings.count(h) > 1)
    assert README.read_text().count(END) == 1


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip("# ").strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line) for line in path.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        where = (doc.parent / path).resolve() if path else doc
        if not where.exists() or (anchor and where.suffix == ".md" and anchor not in anchors(where)):
            broken.append(target)
    assert not broken, f"{doc.name}: {broken}"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_repository_path_named_in_code_exists(doc):
    named = {token.rstrip(".,:;") for token in re.findall(r"`([^`\s]+)`", doc.read_text())
             if token.startswith(TOP_DIRS) and not re.search(r"[*<>{}$]", token)}
    missing = sorted(path for path in named if not (REPO / path.split(":")[0]).exists())
    assert not missing, f"{doc.name} names paths that are not in the repository: {missing}"


def test_the_counts_it_quotes_are_the_rules_and_probes_own():
    text = " ".join(README.read_text().split())
    binaries = len(load_rules().lists["miner_binaries"])
    assert f"({binaries} binaries and campaign disguises)" in text
    assert f"argv past {C['ARGV_STACK_CHUNK'] * C['ARGV_STACK_CHUNKS'] // 1024} KiB is cut" in text
    assert (f"argv beyond {C['ARGV_MAX_ARGS']} arguments, {C['ARGV_ARG_READ'] // 1024} KiB per argument "
            f"or {C['ARGV_BUF_LEN'] // 1024} KiB in all") in text
    assert f"the first {C['FLOW_PAYLOAD_MAX']} bytes of the first {C['FLOW_SEGMENTS_MAX']} data segments" in text


def test_the_licence_file_is_linked():
    assert "[LICENSE](LICENSE)" in README.read_text() and (REPO / "LICENSE").is_file()
