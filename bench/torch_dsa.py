#!/usr/bin/env python3
"""The DSA ops in plain PyTorch (bf16, eager), timed like train/cmd_bench.c: torch.cuda events, warm-up (2 calls and >= 0.25 s),
median of --runs, fresh random inputs. Prints one line per case: RESULT op T H median_ms peak_bytes.
Sparse attention gathers the selected kv rows in row chunks (a whole [T, K, D] gather does not fit)."""
import argparse
import statistics
import sys
import time

import torch


WARMUP_S = 0.25  # as BENCH_WARMUP_S in train/cmd_bench.c: every case timed at the clock its own power draw sets


def median_ms(fn, runs, warmup=2):
    t0 = time.monotonic()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    while time.monotonic() - t0 < WARMUP_S:
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def report(op, T, H, ms, peak):
    print(f"RESULT {op} {T} {H} {ms:.4f} {peak}", flush=True)


def sparse_fwd_chunk(q, kv, idx, sigma, dv):
    g = kv[idx]                                        # [c, K, D] gathered rows
    s = torch.einsum("chd,ckd->chk", q, g).float() * sigma
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).to(q.dtype)
    out = torch.einsum("chk,ckd->chd", p, g[..., :dv])
    return out, lse


def bench_attention(T, H, K, D, Dv, runs, chunk):
    dev = "cuda"
    sigma = 1.0 / 16
    q = torch.randn(T, H, D, device=dev, dtype=torch.bfloat16)
    kv = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
    idx = torch.randint(0, T, (T, K), device=dev)
    dout = torch.randn(T, H, Dv, device=dev, dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            for r in range(0, T, chunk):
                sparse_fwd_chunk(q[r:r + chunk], kv, idx[r:r + chunk], sigma, Dv)

    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(fwd, runs)
    report("sparse_mqa_fwd", T, H, ms, torch.cuda.max_memory_allocated())

    qg, kvg = q.detach().requires_grad_(), kv.detach().requires_grad_()

    def fwd_bwd():
        qg.grad = None
        kvg.grad = None
        for r in range(0, T, chunk):
            out, _ = sparse_fwd_chunk(qg[r:r + chunk], kvg, idx[r:r + chunk], sigma, Dv)
            out.backward(dout[r:r + chunk])

    torch.cuda.reset_peak_memory_stats()
    ms_fb = median_ms(fwd_bwd, runs)
    report("sparse_mqa_bwd", T, H, max(ms_fb - ms, 1e-3), torch.cuda.max_memory_allocated())

    lse = torch.empty(T, H, device=dev)
    with torch.no_grad():
        for r in range(0, T, chunk):
            lse[r:r + chunk] = sparse_fwd_chunk(q[r:r + chunk], kv, idx[r:r + chunk], sigma, Dv)[1]

    def headsum():
        with torch.no_grad():
            for r in range(0, T, chunk):
                g = kv[idx[r:r + chunk]]
                s = torch.einsum("chd,ckd->chk", q[r:r + chunk], g).float() * sigma
                torch.exp(s - lse[r:r + chunk, :, None]).sum(1).to(torch.bfloat16)

    torch.cuda.reset_peak_memory_stats()
    report("score_headsum", T, H, median_ms(headsum, runs), torch.cuda.max_memory_allocated())
    del q, kv, idx, dout, qg, kvg, lse
    torch.cuda.empty_cache()


def bench_indexer(T, K, HI, DI, runs, chunk):
    dev = "cuda"
    q = torch.randn(T, HI, DI, device=dev, dtype=torch.bfloat16)
    k = torch.randn(T, DI, device=dev, dtype=torch.bfloat16)
    w = torch.randn(T, HI, device=dev, dtype=torch.bfloat16) * 0.1
    causal = torch.ones(T, T, device=dev, dtype=torch.bool).tril()
    logits = torch.empty(T, T, device=dev, dtype=torch.float32)

    def compute_logits():
        with torch.no_grad():
            for r in range(0, T, chunk):
                s = torch.relu(torch.einsum("chd,sd->chs", q[r:r + chunk], k)).float()
                l = torch.einsum("chs,ch->cs", s, w[r:r + chunk].float())
                logits[r:r + chunk] = l.masked_fill(~causal[r:r + chunk], float("-inf"))

    torch.cuda.reset_peak_memory_stats()
    report("indexer_logits", T, HI, median_ms(compute_logits, runs), torch.cuda.max_memory_allocated())
    compute_logits()

    def topk():
        v, i = torch.topk(logits, K, dim=-1)
        i = torch.where(torch.isfinite(v), i, torch.full_like(i, -1))
        torch.sort(i, dim=-1)  # ascending key order (our output contract)

    torch.cuda.reset_peak_memory_stats()
    report("topk", T, 0, median_ms(topk, runs), torch.cuda.max_memory_allocated())

    def fused():
        compute_logits()
        topk()

    torch.cuda.reset_peak_memory_stats()
    report("indexer_topk_fused", T, HI, median_ms(fused, runs), torch.cuda.max_memory_allocated())

    idx = torch.topk(logits, K, dim=-1).indices
    qg, kg, wg = q.detach().requires_grad_(), k.detach().requires_grad_(), w.detach().requires_grad_()
    G = torch.randn(T, K, device=dev, dtype=torch.float32)

    def gathered(qx, kx, wx, r):
        kk = kx[idx[r:r + chunk]]                                    # [c, K, DI]
        s = torch.relu(torch.einsum("chd,ckd->chk", qx[r:r + chunk], kk)).float()
        return torch.einsum("chk,ch->ck", s, wx[r:r + chunk].float())

    def gather_fwd():
        with torch.no_grad():
            for r in range(0, T, chunk):
                gathered(q, k, w, r)

    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(gather_fwd, runs)
    report("indexer_gather_fwd", T, HI, ms, torch.cuda.max_memory_allocated())

    def gather_fb():
        qg.grad = kg.grad = wg.grad = None
        for r in range(0, T, chunk):
            gathered(qg, kg, wg, r).backward(G[r:r + chunk])

    torch.cuda.reset_peak_memory_stats()
    ms_fb = median_ms(gather_fb, runs)
    report("indexer_gather_bwd", T, HI, max(ms_fb - ms, 1e-3), torch.cuda.max_memory_allocated())
    del q, k, w, causal, logits, idx, qg, kg, wg, G
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", default="4096,8192")
    ap.add_argument("--H", default="64,128")
    ap.add_argument("--K", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--HI", type=int, default=64)
    ap.add_argument("--DI", type=int, default=128)
    ap.add_argument("--only", default="all")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch: no CUDA device", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    torch.manual_seed(0)
    for T in [int(x) for x in args.T.split(",")]:
        if args.only in ("all", "attention"):
            for H in [int(x) for x in args.H.split(",")]:
                bench_attention(T, H, args.K, 576, 512, args.runs, chunk=256 if H <= 64 else 128)
        if args.only in ("all", "indexer"):
            bench_indexer(T, args.K, args.HI, args.DI, args.runs, chunk=256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
