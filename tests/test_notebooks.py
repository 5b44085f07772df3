"Repository hygiene for the notebooks: papermill parameters survive nbdev-clean, no executed outputs in nbs/."
import json
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
STAGES = sorted(p for p in NBS.glob("0[1-6]*.ipynb"))


def _cells(p):
    return json.loads(p.read_text())["cells"]


def test_stage_notebooks_exist():
    names = {p.stem.split("_", 1)[1] for p in STAGES}
    assert {"data", "caption", "model", "explain", "report", "cli"} <= names


@pytest.mark.parametrize("nb", STAGES, ids=lambda p: p.name)
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
