#!/usr/bin/env python3
"""ctest driver: dumps one batch of a small model with `dsa gradcheck --dump` (our loss and every
parameter gradient, sparse path), then recomputes them with the PyTorch reference (model_ref.py)
and compares (rel err <= 1e-5). Exit 77 (skip) when torch or h5py are missing."""
import os
import subprocess
import sys
import tempfile

try:
    import h5py  # noqa: F401
    import torch  # noqa: F401
except ImportError as e:
    print(f"SKIP: PyTorch reference needs torch and h5py ({e})")
    sys.exit(77)

here = os.path.dirname(os.path.abspath(__file__))
dsa = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DSA_BINARY", "dsa")
config = os.path.join(here, "..", "..", "configs", "tiny.cfg")
# Several documents, padding (P = 4), a sink, IndexShare and a top-k smaller than most windows.
cases = {
    "sink+indexshare": ["model.attn_sink=true", "model.index_share_every=2", "model.n_layers=3"],
    "padded+tied": ["data.pad_multiple=4", "model.tie_embeddings=true", "model.index_topk=5"],
}
fails = 0
with tempfile.TemporaryDirectory() as tmp:
    for name, overrides in cases.items():
        dump = os.path.join(tmp, f"{name}.h5")
        cmd = [dsa, "gradcheck", config, *overrides, "--dump", dump]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if not os.path.exists(dump):
            print(f"FAIL {name}: {' '.join(cmd)} wrote no dump (rc {r.returncode})\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            fails += 1
            continue
        r = subprocess.run([sys.executable, os.path.join(here, "model_ref.py"), dump], capture_output=True, text=True)
        print(f"== {name}\n{r.stdout}{r.stderr}", end="")
        fails += r.returncode != 0
print(f"{len(cases) - fails} passed, {fails} failed")
sys.exit(1 if fails else 0)
