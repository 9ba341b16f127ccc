"""Every notebook runs top to bottom on CPU with the embedded default critic (kernel: this virtualenv's).

``CPRS_NOTEBOOK_FAST=1`` is set for the kernel: a notebook that trains (fine_tune_your_data) then runs a few steps
only; CI never trains for long.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CPRS_NOTEBOOK_FAST", "1")  # the kernel inherits this process's environment
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    # scripts/setup_venv.sh installs a "python3" kernelspec inside the virtualenv (sys.prefix), found first
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and any(cell.get("outputs") for cell in code_cells)
    assert not [o for cell in code_cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3
