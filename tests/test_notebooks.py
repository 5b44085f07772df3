"""Repository hygiene for the notebooks: papermill parameters survive nbdev-clean, no executed outputs in nbs/,
and every report's Analysis section uses only names it imports or its stage module defines."""
import ast, builtins, importlib, json, re
from pathlib import Path

import pytest

from posterlens.report import report_notebook, report_pages

NBS = Path(__file__).resolve().parents[1] / "nbs"
NUMBERED = sorted(p for p in NBS.glob("0[0-9]*.ipynb"))


def _cells(p):
    return json.loads(p.read_text())["cells"]


def _has_analysis(p):
    return any(c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Analysis") for c in _cells(p))


ANALYSED = [p for p in NUMBERED if _has_analysis(p)]


def test_stage_notebooks_exist():
    names = {p.stem.split("_", 1)[1] for p in ANALYSED}
    assert {"data", "caption", "model", "explain", "report", "cli"} <= names


@pytest.mark.parametrize("nb", ANALYSED, ids=lambda p: p.name)
def test_parameters_cell(nb):
    tagged = [c for c in _cells(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: exactly one cell tagged 'parameters'"
    src = "".join(tagged[0]["source"])
    assert "variant" in src and "overrides" in src


@pytest.mark.parametrize("nb", sorted(NBS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_are_clean(nb):
    for c in _cells(nb):
        if c["cell_type"] == "code":
            assert not c.get("outputs"), f"{nb.name}: executed outputs belong in reports/, not nbs/"
            assert c.get("execution_count") is None


def _names(src):
    "(names a cell reads, names it binds)."
    tree = ast.parse("\n".join(l for l in src.split("\n") if not l.lstrip().startswith(("#|", "%"))))
    loads, binds = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name): (loads if isinstance(n.ctx, ast.Load) else binds).add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)): binds |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)): binds.add(n.name)
        elif isinstance(n, ast.arg): binds.add(n.arg)
    return loads, binds


@pytest.mark.parametrize("name", report_pages())
def test_report_names_resolve(name):
    "A report runs in a kernel that has only the stage module's names: every other name must be imported there."
    nb = report_notebook(NBS / f"{name}.ipynb")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    mod = importlib.import_module("posterlens." + re.search(r"import posterlens\.(\w+)", code[0]).group(1))
    known = set(dir(mod)) | set(dir(builtins)) | {"display", "variant", "overrides"}
    loads, binds = set(), set()
    for src in code[1:]:
        l, b = _names(src); loads |= l; binds |= b
    assert sorted(loads - known - binds) == []
