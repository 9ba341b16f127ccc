"""The API reference site builds from the docstrings without a warning (mkdocs --strict): a broken reference fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = (site / "api" / "options" / "index.html").read_text(encoding="utf-8")
    assert "CompressionOptions" in page and "score_threshold" in page
    assert (site / "adapters" / "switching" / "index.html").is_file()
    scale_out = (site / "scale_out" / "index.html").read_text(encoding="utf-8")
    assert "compress_dataset" in scale_out and "build_app" in scale_out
    coarse = (site / "api" / "coarse" / "index.html").read_text(encoding="utf-8")
    assert "choose_windows" in coarse and "PreparedCache" in coarse and "StaticEmbedder" in coarse
