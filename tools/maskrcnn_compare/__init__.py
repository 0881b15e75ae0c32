"""The pieces of ``tools/compare_maskrcnn.py`` (SOLOv2 vs torchvision Mask R-CNN on one data
stream), also used by ``dev/dense_sweep.py``:

* ``models``: the pairings, our config and model, the peer Mask R-CNN, its inputs and outputs
  and its evaluation with our COCO evaluator;
* ``loop``: the shared schedule and the loop that steps every model on each batch;
* ``report``: the table, the figures and ``compare.json``;
* ``run``: one comparison from parsed arguments (what the CLI's ``main`` calls).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import solov2  # noqa: F401
except ImportError:  # running from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
