"""The notebooks in demos/ are executed (not just parsed) on tiny models."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

DEMOS = sorted((Path(__file__).resolve().parents[1] / "demos").glob("*.ipynb"))


def test_there_are_demos():
    assert len(DEMOS) >= 3


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_demo_notebook_runs(path, isolated_cache, monkeypatch, tmp_path):
    monkeypatch.delenv("RECALL_CIRCUITS_DEMO_RUN", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, "the notebook printed nothing"
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    if "heads" in path.stem:  # the figures and the circuitsvis page are in the outputs
        assert "<script" in html and "circuitsvis" in html.lower()
    if "heads" in path.stem or "recipes" in path.stem:   # figures inline plotly.js: no CDN, no MathJax
        assert "plotly" in html.lower()
        assert len(re.findall(r"plotly\.js v\d", html)) == 1      # the bundle once, with the first figure
    first = "".join(nb.cells[0].source)
    assert f"jupyter-execute --inplace demos/{path.name}" in first and "ipykernel install" in first
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", html)
