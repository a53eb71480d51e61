"""Claims about backbones are tied to tests: every built-in says what a test loads, and nothing else is claimed."""

from __future__ import annotations

import json
from pathlib import Path

from vssl.extract.backbones import list_backbones
from vssl.extract.backbones.listing import backbone_rows
from vssl.extract.backbones.verified import VERIFIED

ROOT = Path(__file__).resolve().parents[3]
UNTESTED = ("SCMA", "CMAE-V")  # methods whose files no test loads


def test_every_builtin_has_a_note_naming_existing_tests():
    builtins = {e.name for e in list_backbones() if e.adapter is not None}
    assert builtins == set(VERIFIED)
    tokens = {e.name: e.tokens for e in list_backbones()}
    for name, note in VERIFIED.items():
        assert note.layouts and note.reference and note.tests, name
        assert bool(note.tokens) == bool(tokens[name]), name  # every family with token views says what checks them
        for test in note.tests:
            assert (ROOT / test).is_file(), (name, test)


def test_listing_shows_the_note_and_claims_no_untested_method():
    rows = {r["name"]: r for r in backbone_rows()}
    assert rows["vjepa2"]["verified"]["reference"].startswith("transformers VJEPA2Model")
    assert "SCMA" in rows["videomae"]["verified"]["unverified"]
    for row in rows.values():
        assert not any(method in row["description"] for method in UNTESTED), row["name"]
    json.dumps(list(rows.values()))  # what `vssl backbones --json` prints


def test_readme_names_untested_methods_only_as_unverified():
    readme = (ROOT / "README.md").read_text()
    for method in UNTESTED:
        for line in readme.splitlines():
            if method in line:
                assert "no test loads" in line or "not" in line, line


def test_the_package_docstrings_name_what_exists():
    """The family list of ``vssl.extract.backbones`` names every built-in and only modules that exist, and
    verified.py names the test that checks its notes."""
    import re

    import vssl.extract.backbones as package
    from vssl.extract.backbones import verified

    doc = package.__doc__
    for entry in list_backbones():
        if entry.adapter is not None:
            assert f"``{entry.name}``" in doc, entry.name
    for module in re.findall(r"\b(\w+)\.py\b", doc):
        assert (ROOT / "vssl" / "extract" / "backbones" / f"{module}.py").is_file(), module
    for test in re.findall(r"tests/[\w/]+\.py", verified.__doc__):
        assert "VERIFIED" in (ROOT / test).read_text(), test
