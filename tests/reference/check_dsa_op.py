#!/usr/bin/env python3
"""Compares `dsa op` (the C ops) with the PyTorch reference (dsa_ref.py) on fresh random inputs.

For each case: write random inputs to HDF5, run `$DSA_BINARY op NAME --in .. --out ..`, compute the
reference in float64 from the same (rounded) inputs, compare every output. Float outputs: max error
scaled by the output's magnitude, max|a-b| / max(1, max|b|) <= tol (1e-5 for float32 inputs, 1e-9 for
float64; CUDA f32: 1e-4); -inf patterns identical. Index outputs: exact. Then error cases: a missing
dataset, a wrong shape, a wrong dtype, bad cu_seqlens, a missing attribute must give a nonzero exit
and a message naming the culprit. Prints `N passed, M failed`; exit 1 on failure, 77 when torch or
h5py are missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: python3 lacks {e.name} (needs torch, h5py, numpy)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsa_ref  # noqa: E402

PASSED = 0
FAILED = 0


def report(ok, what):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")


# ---- random inputs ----------------------------------------------------------------------------------

def randn(g, *shape, scale=1.0):
    """Normal values, never exactly zero."""
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return torch.where(x == 0, torch.full_like(x, 1e-3), x)


def random_idx(g, T, K, S, window=None, extra=3):
    """[T, K] int32 top-k-like indices: distinct keys (some >= S), -1 in the middle of some rows.
    With window (start, end), keys are drawn from the window (plus out-of-range ones)."""
    idx = torch.full((T, K), -1, dtype=torch.int64)
    for t in range(T):
        lo, hi = (0, S) if window is None else (int(window[0][t]), int(window[1][t]))
        pool = torch.cat([torch.arange(lo, hi), torch.arange(S, S + extra)])
        pick = pool[torch.randperm(pool.numel(), generator=g)[:K]]
        idx[t, :pick.numel()] = pick
        if t % 3 == 1 and K > 2:  # -1 mid-row
            idx[t, int(torch.randint(1, K - 1, (1,), generator=g))] = -1
    if T > 0:
        idx[0, :] = -1  # a row with every slot invalid
    return idx.to(torch.int32)


def random_topk_length(g, T, K):
    tl = torch.randint(0, K + 1, (T,), generator=g)
    tl[0] = K
    if T > 1:
        tl[1] = 0
    return tl.to(torch.int32)


def random_docs(g, lens, P):
    """cu_seqlens, cu_seqlens_padded (int32) for real lengths `lens`, padded to multiples of P."""
    cu, cup = [0], [0]
    for n in lens:
        cu.append(cu[-1] + n)
        cup.append(cup[-1] + (n + P - 1) // P * P)
    return torch.tensor(cu, dtype=torch.int32), torch.tensor(cup, dtype=torch.int32)


def random_query_indices(g, rows, T):
    """T distinct global rows in a shuffled order (like a zigzag CP split)."""
    return torch.randperm(rows, generator=g)[:T].to(torch.int32)


# ---- running and comparing --------------------------------------------------------------------------

def write_h5(path, datasets, attrs, dtype):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            if v is None:
                continue
            a = v.numpy()
            if a.dtype.kind == "f":
                a = a.astype(dtype)
            f.create_dataset(k, data=a)
        for k, v in attrs.items():
            f.attrs[k] = v


def read_back(datasets, dtype):
    """The inputs as the binary sees them: floats rounded to the file dtype, then float64."""
    out = {}
    for k, v in datasets.items():
        if v is not None and v.dtype.is_floating_point:
            v = torch.from_numpy(v.numpy().astype(dtype).astype(np.float64))
        out[k] = v
    return out


def run_dsa(args, op, inp, outp):
    cmd = [args.dsa, "op", op, "--in", inp, "--out", outp, "--device", args.device]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def compare(name, got, want, tol, exact=False):
    got = np.asarray(got)
    want = np.asarray(want.detach().numpy() if torch.is_tensor(want) else want)
    if got.shape != want.shape:
        report(False, f"{name}: shape {got.shape} != reference {want.shape}")
        return
    if exact:
        bad = int((got != want).sum())
        report(bad == 0, f"{name}: exact, {bad} mismatches of {want.size}")
        return
    got, want = got.astype(np.float64), want.astype(np.float64)
    if np.isnan(got).any() or np.isnan(want).any():
        report(False, f"{name}: NaN (dsa {int(np.isnan(got).sum())}, reference {int(np.isnan(want).sum())})")
        return
    inf_g, inf_w = np.isinf(got), np.isinf(want)
    if (inf_g != inf_w).any() or (got[inf_g] != want[inf_w]).any():
        report(False, f"{name}: inf pattern differs ({int((inf_g != inf_w).sum())} entries)")
        return
    fin = ~inf_w
    if not fin.any():
        report(True, f"{name}: all inf, pattern equal")
        return
    diff = np.abs(got[fin] - want[fin])
    scale = max(1.0, float(np.abs(want[fin]).max()))
    err = float(diff.max()) / scale
    report(err <= tol, f"{name}: max abs err {diff.max():.3e}, scaled err {err:.3e} (tol {tol:.0e})")


def check_case(args, op, label, datasets, attrs, dtype, reference, exact=()):
    """Writes the inputs, runs the binary, compares every reference output."""
    print(f"[{op}] {label} ({np.dtype(dtype).name})")
    # `dsa op --device cuda` computes in float32 whatever the file holds (docs/dsa_op.md), so float64
    # inputs get float32's tolerance there.
    if args.device == "cuda":
        tol = 1e-4
    else:
        tol = 1e-9 if dtype == np.float64 else 1e-5
    with tempfile.TemporaryDirectory() as d:
        inp, outp = os.path.join(d, "in.h5"), os.path.join(d, "out.h5")
        write_h5(inp, datasets, attrs, dtype)
        r = run_dsa(args, op, inp, outp)
        if r.returncode != 0:
            report(False, f"dsa op exited {r.returncode}: {r.stderr.strip()}")
            return
        want = reference(read_back(datasets, dtype))
        with h5py.File(outp, "r") as f:
            for k, v in want.items():
                if k not in f:
                    report(False, f"{k}: missing in the output file")
                    continue
                compare(k, f[k][()], v, tol, exact=k in exact)
            extra = sorted(set(f.keys()) - set(want.keys()))
            if extra:
                print(f"  note: outputs not compared: {extra}")


# ---- the cases --------------------------------------------------------------------------------------

def sparse_mqa_case(args, g, label, T, H, D, dv, S, K, sink, tl, mhk=0, dtype=np.float32):
    sigma = D ** -0.5
    ds = {"q": randn(g, T, H, D), "kv": randn(g, S, D), "idx": random_idx(g, T, K, S),
          "dout": randn(g, T, H, dv), "sink": randn(g, H) if sink else None,
          "topk_length": random_topk_length(g, T, K) if tl else None}
    attrs = {"sigma": sigma, "dv": dv}
    if mhk:
        attrs["max_heads_per_kernel"] = mhk

    def ref(x):
        return dsa_ref.sparse_mqa_op(x["q"], x["kv"], x["idx"], x["dout"], sigma, dv, x["topk_length"], x["sink"])

    check_case(args, "sparse_mqa", label, ds, attrs, dtype, ref)


def indexer_topk_case(args, g, label, lens, P, H, D, K, use_qi, dtype=np.float32):
    cu, cup = random_docs(g, lens, P)
    S = int(cup[-1])
    qi = random_query_indices(g, S, max(1, S * 2 // 3)) if use_qi else None
    T = S if qi is None else qi.numel()
    ds = {"q": randn(g, T, H, D), "k": randn(g, S, D), "w": randn(g, T, H, scale=D ** -0.5),
          "cu_seqlens": cu, "cu_seqlens_padded": cup, "query_indices": qi}

    def ref(x):
        return dsa_ref.indexer_topk_op(x["q"], x["k"], x["w"], cu, cup, K, qi)

    check_case(args, "indexer_topk", label, ds, {"topk": K}, dtype, ref, exact=("idx", "topk_length"))


def kl_case(args, g, label, mode, lens, P, H, D, HI, DI, K, use_qi, tl, dtype=np.float32):
    cu, cup = random_docs(g, lens, P)
    S = int(cup[-1])
    qi = random_query_indices(g, S, max(1, S * 2 // 3)) if use_qi else None
    T = S if qi is None else qi.numel()
    start, end, _ = dsa_ref.window_bounds(cu, cup, qi)
    sigma, coeff = D ** -0.5, 0.7
    ds = {"index_q": randn(g, T, HI, DI), "index_k": randn(g, S, DI), "w": randn(g, T, HI, scale=DI ** -0.5),
          "q": randn(g, T, H, D), "kv": randn(g, S, D), "cu_seqlens": cu, "cu_seqlens_padded": cup,
          "query_indices": qi}
    if mode == "sparse":
        ds["idx"] = random_idx(g, T, K, S, window=(start, end))
        ds["topk_length"] = random_topk_length(g, T, K) if tl else None

    def ref(x):
        return dsa_ref.kl_indexer_op(x["index_q"], x["index_k"], x["w"], x["q"], x["kv"], cu, cup, sigma, coeff,
                                     mode, x.get("idx"), x.get("topk_length"), qi)

    check_case(args, "kl_indexer_loss", label, ds, {"sigma": sigma, "coeff": coeff, "mode": mode}, dtype, ref)


def error_cases(args, g):
    """Bad inputs: nonzero exit, a message naming the dataset/attribute, nothing written."""
    print("[errors]")
    T, H, D, S, K = 4, 2, 8, 6, 3
    good = {"q": randn(g, T, H, D), "kv": randn(g, S, D), "idx": random_idx(g, T, K, S), "dout": randn(g, T, H, D)}
    attrs = {"sigma": 0.3, "dv": D}
    cu, cup = random_docs(g, [3, 2], 4)
    topk = {"q": randn(g, 8, 2, 4), "k": randn(g, 8, 4), "w": randn(g, 8, 2), "cu_seqlens": cu,
            "cu_seqlens_padded": cup}
    cases = [
        ("missing dataset kv", "sparse_mqa", {**good, "kv": None}, attrs, "'kv'"),
        ("missing dataset dout", "sparse_mqa", {**good, "dout": None}, attrs, "'dout'"),
        ("wrong shape kv", "sparse_mqa", {**good, "kv": randn(g, S, D + 1)}, attrs, "'kv'"),
        ("wrong rank q", "sparse_mqa", {**good, "q": randn(g, T, H * D)}, attrs, "'q'"),
        ("float idx", "sparse_mqa", {**good, "idx": randn(g, T, K)}, attrs, "'idx'"),
        ("missing attribute sigma", "sparse_mqa", good, {"dv": D}, "'sigma'"),
        ("missing cu_seqlens", "indexer_topk", {**topk, "cu_seqlens": None}, {"topk": 2}, "'cu_seqlens'"),
        ("cu_seqlens past the key rows", "indexer_topk",
         {**topk, "cu_seqlens": torch.tensor([0, 3, 9], dtype=torch.int32),
          "cu_seqlens_padded": torch.tensor([0, 4, 12], dtype=torch.int32)}, {"topk": 2}, "cu_seqlens"),
        ("document longer than its padding", "indexer_topk",
         {**topk, "cu_seqlens": torch.tensor([0, 5, 7], dtype=torch.int32)}, {"topk": 2}, "'cu_seqlens'"),
        ("bad mode attribute", "kl_indexer_loss", {}, {"mode": "sparce", "sigma": 0.3, "coeff": 1.0}, "'mode'"),
        ("query_indices out of range", "indexer_topk",
         {**topk, "q": randn(g, 2, 2, 4), "w": randn(g, 2, 2),
          "query_indices": torch.tensor([1, 99], dtype=torch.int32)}, {"topk": 2}, "'query_indices'"),
    ]
    with tempfile.TemporaryDirectory() as d:
        inp, outp = os.path.join(d, "in.h5"), os.path.join(d, "out.h5")
        for label, op, ds, at, needle in cases:
            write_h5(inp, ds, at, np.float32)
            r = run_dsa(args, op, inp, outp)
            msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            ok = r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr and not os.path.exists(outp)
            report(ok, f"{label}: exit {r.returncode}, message: {msg}")
        r = run_dsa(args, "sparse_mqa", os.path.join(d, "nonexistent.h5"), outp)
        report(r.returncode == 1 and "nonexistent.h5" in r.stderr, f"missing input file: exit {r.returncode}, "
               f"message: {r.stderr.strip()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsa", default=os.environ.get("DSA_BINARY", "dsa"), help="the dsa binary ($DSA_BINARY)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=None, help="default: fresh each run")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed} (rerun with --seed {seed}), dsa {args.dsa}, device {args.device}")
    g = torch.Generator().manual_seed(seed)

    # Self-check of the reference's window bounds against SPEC 0's example.
    s, e, real = dsa_ref.window_bounds(torch.tensor([0, 2, 5]), torch.tensor([0, 4, 8]))
    report(s.tolist() == [0, 0, 0, 0, 4, 4, 4, 4] and e.tolist() == [1, 2, 2, 2, 5, 6, 7, 7]
           and real.tolist() == [1, 1, 0, 0, 1, 1, 1, 0], "reference window bounds match SPEC 0's example")

    sparse_mqa_case(args, g, "no sink, no topk_length", T=7, H=3, D=16, dv=12, S=11, K=5, sink=False, tl=False)
    sparse_mqa_case(args, g, "sink + topk_length", T=9, H=5, D=20, dv=16, S=13, K=6, sink=True, tl=True)
    sparse_mqa_case(args, g, "sink, head-chunked (5 heads by 2)", T=6, H=5, D=12, dv=12, S=9, K=4, sink=True,
                    tl=True, mhk=2)
    sparse_mqa_case(args, g, "K > S, float64", T=5, H=2, D=10, dv=6, S=4, K=7, sink=True, tl=True,
                    dtype=np.float64)

    indexer_topk_case(args, g, "one doc, P=1", lens=[10], P=1, H=3, D=8, K=4, use_qi=False)
    indexer_topk_case(args, g, "3 docs padded P=4", lens=[5, 3, 9], P=4, H=4, D=8, K=3, use_qi=False)
    indexer_topk_case(args, g, "P=4 + query_indices, K > windows", lens=[6, 2, 7], P=4, H=2, D=16, K=8,
                      use_qi=True)
    indexer_topk_case(args, g, "float64", lens=[4, 7], P=2, H=3, D=8, K=3, use_qi=True, dtype=np.float64)

    kl_case(args, g, "sparse, one doc", "sparse", lens=[9], P=1, H=3, D=12, HI=4, DI=8, K=4, use_qi=False, tl=False)
    kl_case(args, g, "sparse, P=4, topk_length, query_indices", "sparse", lens=[5, 6, 3], P=4, H=2, D=10, HI=3,
            DI=8, K=5, use_qi=True, tl=True)
    kl_case(args, g, "dense, P=4", "dense", lens=[6, 3], P=4, H=3, D=8, HI=2, DI=6, K=0, use_qi=False, tl=False)
    kl_case(args, g, "dense, P=4, query_indices", "dense", lens=[7, 5, 2], P=4, H=2, D=8, HI=3, DI=8, K=0,
            use_qi=True, tl=False)
    kl_case(args, g, "sparse, float64", "sparse", lens=[5, 4], P=2, H=2, D=8, HI=2, DI=4, K=3, use_qi=True,
            tl=True, dtype=np.float64)
    kl_case(args, g, "dense, float64", "dense", lens=[5, 4], P=2, H=2, D=8, HI=2, DI=4, K=0, use_qi=False,
            tl=False, dtype=np.float64)

    error_cases(args, g)
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
