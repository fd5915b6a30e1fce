"""ddp.py: DDP's gradients live in its all-reduce buckets, not in a second copy beside them."""

from __future__ import annotations

import json
import subprocess
import sys

# In its own process: a gloo group torn down inside a long pytest process can deadlock in
# ProcessGroupGloo's destructor when DDP's reducer outlives it.
SCRIPT = """
import json, sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from mgft_train.distributed import Dist
from mgft_train.parallel.ddp import ddp_kwargs

dist.init_process_group("gloo", store=dist.FileStore(sys.argv[1], 1), rank=0, world_size=1)
model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="gloo")
wrapped = DistributedDataParallel(model, **ddp_kwargs(model, ctx))
wrapped(torch.randn(4, 64)).sum().backward()
print(json.dumps({"params": len(list(model.parameters())),
                  "storages": len({p.grad.untyped_storage().data_ptr()
                                   for p in model.parameters()})}))
"""


def test_gradients_are_views_into_the_buckets(tmp_path):
    """Without gradient_as_bucket_view every parameter's .grad is its own tensor (2 bytes per
    trained parameter more in bf16: 15 GiB for a full 8B fine-tune); with it they share the
    few bucket storages."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["params"] == 16 and counts["storages"] <= 2
