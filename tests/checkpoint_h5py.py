#!/usr/bin/env python3
"""A dsa checkpoint opens with h5py as DESIGN.md promises, and `dsa inspect` lists it.

usage: checkpoint_h5py.py TEST_CHECKPOINT_BINARY [DSA_BINARY]
The first binary writes a deterministic sample (test_checkpoint --write-sample PATH): parameter i
(in order embed.weight, layers.0.attn.wq_a.weight, layers.0.norm.weight, head.scale) holds
(j + 1) * 0.5 * (i + 1) at flat index j, its AdamW m = -param, v = param^2. Exit 77 = skipped.
"""
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:
    print(f"SKIP: {e} (install python3-h5py)")
    sys.exit(77)

NAMES = ["embed.weight", "layers.0.attn.wq_a.weight", "layers.0.norm.weight", "head.scale"]
SHAPES = [(16, 8), (2, 3, 5), (8,), ()]
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    failures += 0 if ok else 1


with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "step_00000042.h5")
    subprocess.run([sys.argv[1], "--write-sample", path], check=True)
    with h5py.File(path, "r") as f:
        params = f["params"]
        check(list(params.keys()) == sorted(NAMES) or set(params.keys()) == set(NAMES),
              f"params: {list(params.keys())}")
        for i, (name, shape) in enumerate(zip(NAMES, SHAPES)):
            x = params[name][()]
            want = ((np.arange(int(np.prod(shape))) + 1) * 0.5 * (i + 1)).astype(np.float32).reshape(shape)
            check(x.dtype == np.float32 and x.shape == shape and np.array_equal(x, want),
                  f"params/{name} {x.dtype} {x.shape} values match")
            m, v = f["optim"][name]["m"][()], f["optim"][name]["v"][()]
            check(np.array_equal(m, -want) and np.array_equal(v, want * want), f"optim/{name}/m,v match")
        st = f["state"]
        check(int(st.attrs["step"]) == 42 and int(st.attrs["format_version"]) == 1
              and int(st.attrs["tp"]) == 2 and int(st.attrs["cp"]) == 4,
              f"state attrs {dict((k, int(v)) for k, v in st.attrs.items())}")
        check(list(st["data_pos"][()]) == [7, -1, 1 << 40], f"state/data_pos {list(st['data_pos'][()])}")
        cfg = f["config"][()]
        cfg = cfg.decode() if isinstance(cfg, bytes) else cfg
        check("[model]" in cfg, "config text readable")
        fmt = f.attrs["format"]
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        check(fmt == "dsa-checkpoint", f"root attribute format = {fmt}")
    if len(sys.argv) > 2:
        r = subprocess.run([sys.argv[2], "inspect", path], capture_output=True, text=True)
        print(r.stdout + r.stderr)
        check(r.returncode == 0 and "step 42" in r.stdout and "params/embed.weight" in r.stdout
              and "[16, 8]" in r.stdout, "dsa inspect lists the checkpoint")
        r = subprocess.run([sys.argv[2], "inspect", os.path.join(d, "absent.h5")], capture_output=True, text=True)
        check(r.returncode == 1 and "absent.h5" in r.stderr, f"dsa inspect on a missing file: {r.stderr.strip()}")

print(f"{failures} failed")
sys.exit(1 if failures else 0)
