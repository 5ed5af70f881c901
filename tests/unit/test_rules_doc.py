"""docs/rules.md's field reference is generated from the field table, so it cannot drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ebpfguard.detect.compiler import OPERATORS
from ebpfguard.detect.fields import FIELDS, TYPES
from ebpfguard.detect.language import COMPARISONS

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "rules.md"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_rules_doc", REPO / "scripts" / "gen_rules_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_field_reference_equals_the_generated_one():
    document = DOC.read_text()
    assert _generator().with_fields(document) == document, "run scripts/gen_rules_doc.py"


def test_every_field_has_a_known_type_and_every_operator_is_documented():
    assert {field.type for field in FIELDS} <= set(TYPES)
    assert all(field.element_type in OPERATORS for field in FIELDS)
    document = DOC.read_text()
    for operator in COMPARISONS:
        assert f"`{operator}`" in document, operator
    assert "`exists`" in document
