"""Writes what a torchrun worker sees of the GPU choice: OUT/rank<R>.json."""

import json
import os
import sys
from pathlib import Path

out = Path(sys.argv[1])
(out / f"rank{os.environ['RANK']}.json").write_text(
    json.dumps({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}))
