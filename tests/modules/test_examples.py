"""Every module's EXAMPLES and every YAML example of docs/modules.md, run as written against a fresh zbs-lite.

A user copies examples; one that needs objects that do not exist, or variables nobody sets, fails
on first contact. The EXAMPLES of each module run in a zbs-lite of their own, from nothing; the
examples of docs/modules.md run in the order the page shows them, in one zbs-lite, task examples
inside a play that sets the connection once with module_defaults (as the page says to).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from playbooks import ROOT, Playbooks

MODULES = sorted((ROOT / "plugins" / "modules").glob("*.py"))
DOC = ROOT / "docs" / "modules.md"


def module_examples(path: Path) -> list[dict[str, Any]]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXAMPLES" for t in node.targets):
            return yaml.safe_load(ast.literal_eval(node.value))
    raise AssertionError(f"{path.name} has no EXAMPLES")


def doc_examples(path: Path) -> list[tuple[int, Any]]:
    """(line, parsed YAML) of every ```yaml block, in order."""
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        out.append((text.count("\n", 0, m.start()) + 1, yaml.safe_load(m.group(1))))
    return out


def is_play(item: Any) -> bool:
    return isinstance(item, dict) and "hosts" in item


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_module_examples_run_as_written(path: Path, playbooks: Playbooks) -> None:
    examples = module_examples(path)
    plays = examples if all(is_play(x) for x in examples) else [playbooks.wrap(examples, f"EXAMPLES of {path.stem}")]
    out = playbooks.run(plays, path.stem)
    assert re.search(r"failed=0 ", out.stdout), out.stdout[-3000:]


def test_docs_examples_run_in_order_as_written(playbooks: Playbooks) -> None:
    blocks = doc_examples(DOC)
    assert len(blocks) >= 5, "docs/modules.md lost its examples"
    plays = []
    for line, block in blocks:
        items = block if isinstance(block, list) else [block]
        if all(is_play(x) for x in items):
            plays.extend(items)
        else:
            plays.append(playbooks.wrap(items, f"docs/modules.md line {line}"))
    out = playbooks.run(plays, "docs-modules")
    assert re.search(r"failed=0 ", out.stdout), out.stdout[-3000:]
