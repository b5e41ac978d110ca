#!/usr/bin/env python3
"""PyTorch reference of the dsa model, written from SPEC.md (sections 0-6) and layers/model.h.

It reads a `dsa gradcheck --dump FILE` file (config text, batch, parameters, our losses and
gradients), rebuilds the same model in float64 with ordinary dense masked attention (autograd does
the backward), and compares the loss and every parameter gradient with ours.

Conventions mirrored (layers/model.h):
  weights W [out, in], y = x W^T; MLA q per head = [q_nope | q_pe], RoPE interleaved on q_pe, k_pe;
  indexer q^I, k^I = [rope | nope], pairing half-split (or interleaved by config); indexer k:
  LayerNorm(eps 1e-6); w' = (W_w x) H_I^-1/2 D_I^-1/2; indexer inputs detached; KL target from
  detached attention scores; IndexShare: a layer without an indexer reuses the previous top-k.
"""
import argparse
import configparser
import math
import sys

import h5py
import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def parse_config(text):
    cp = configparser.ConfigParser(inline_comment_prefixes=("#",))
    cp.read_string(text)

    def get(sec, key, kind=float):
        v = cp.get(sec, key).strip().strip('"')
        if kind is bool:
            return v.lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(float(v))
        return kind(v)

    return get


def rope(x, pos, rope_dim, theta, interleaved):
    """Rotates the first rope_dim dims of the last axis. x [T, ..., D], pos [T]."""
    j = torch.arange(rope_dim // 2, dtype=torch.float64)
    ang = pos.to(torch.float64)[:, None] * theta ** (-2.0 * j / rope_dim)  # [T, r/2]
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [rope_dim // 2]
    cs, sn = torch.cos(ang).view(shape), torch.sin(ang).view(shape)
    r, rest = x[..., :rope_dim], x[..., rope_dim:]
    if interleaved:
        a, b = r[..., 0::2], r[..., 1::2]
        out = torch.stack([a * cs - b * sn, a * sn + b * cs], dim=-1).flatten(-2)
    else:
        a, b = r[..., : rope_dim // 2], r[..., rope_dim // 2:]
        out = torch.cat([a * cs - b * sn, a * sn + b * cs], dim=-1)
    return torch.cat([out, rest], dim=-1)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def window_bounds(cu, cup):
    """SPEC 0: [start, end) and is_real of every padded row."""
    T = int(cup[-1])
    start, end, real = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, bool)
    for d in range(len(cu) - 1):
        s, real_end = int(cup[d]), int(cup[d]) + int(cu[d + 1] - cu[d])
        for r in range(int(cup[d]), int(cup[d + 1])):
            start[r], end[r], real[r] = s, max(min(r + 1, real_end), s + 1), r < real_end
    return start, end, real


def topk_select(logits, K):
    """SPEC 2 on a [T, S] tensor with -inf outside the window: valid picks in ascending key order,
    ties to the lower key; returns a boolean [T, S] selection mask."""
    T, S = logits.shape
    sel = torch.zeros(T, S, dtype=torch.bool)
    for t in range(T):
        valid = torch.nonzero(torch.isfinite(logits[t])).flatten()
        if len(valid) <= K:
            sel[t, valid] = True
            continue
        # Stable sort by descending score: equal scores keep ascending key order.
        order = torch.sort(-logits[t, valid], stable=True).indices[:K]
        sel[t, valid[order]] = True
    return sel


class Model:
    def __init__(self, cfg_text, params):
        g = parse_config(cfg_text)
        self.H = g("model", "n_heads", int)
        self.nope = g("model", "qk_nope_head_dim", int)
        self.rope = g("model", "qk_rope_head_dim", int)
        self.v = g("model", "v_head_dim", int)
        self.L = g("model", "kv_lora_rank", int)
        self.HI = g("model", "index_n_heads", int)
        self.DI = g("model", "index_head_dim", int)
        self.K = g("model", "index_topk", int)
        self.n_layers = g("model", "n_layers", int)
        self.share = g("model", "index_share_every", int)
        self.theta = g("model", "rope_theta")
        self.eps = g("model", "norm_eps")
        self.idx_interleave = g("model", "index_rope_interleave", bool)
        self.tied = g("model", "tie_embeddings", bool)
        scale = g("model", "softmax_scale")
        self.sigma = scale if scale > 0 else 1.0 / math.sqrt(self.nope + self.rope)
        self.coeff = g("optim", "indexer_loss_coeff")
        self.p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}

    def has_indexer(self, l):
        return self.share <= 1 or l % self.share == 0

    def indexer(self, l, x, c_q, pos, start, end):
        """Returns the full logits I [T, T] (-inf outside the window); inputs already detached."""
        P = lambda n: self.p[f"layers.{l}.attn.indexer.{n}"]
        T = x.shape[0]
        q = (c_q @ P("wq_b.weight").T).view(T, self.HI, self.DI)
        q = rope(q, pos, self.rope, self.theta, self.idx_interleave)
        k = torch.nn.functional.layer_norm(x @ P("wk.weight").T, (self.DI,), P("k_norm.weight"), P("k_norm.bias"), 1e-6)
        k = rope(k, pos, self.rope, self.theta, self.idx_interleave)
        w = (x @ P("weights_proj.weight").T) / math.sqrt(self.HI) / math.sqrt(self.DI)
        r = torch.relu(torch.einsum("thd,sd->ths", q, k))
        I = torch.einsum("th,ths->ts", w, r)
        s = torch.arange(T)
        inside = (s[None, :] >= start[:, None]) & (s[None, :] < end[:, None])
        return torch.where(inside, I, torch.full_like(I, -math.inf)), inside

    def attention(self, l, h, pos, allowed):
        """Dense per-head MLA attention with boolean mask allowed [T, T]. Returns y and the detached
        scores S [H, T, T] (masked to -inf) for the KL target."""
        P = lambda n: self.p[f"layers.{l}.attn.{n}"]
        T, H = h.shape[0], self.H
        c_q = rmsnorm(h @ P("wq_a.weight").T, P("q_norm.weight"), self.eps)
        q = (c_q @ P("wq_b.weight").T).view(T, H, self.nope + self.rope)
        q_nope, q_pe = q[..., : self.nope], rope(q[..., self.nope:], pos, self.rope, self.theta, True)
        kva = h @ P("wkv_a.weight").T
        c_kv = rmsnorm(kva[:, : self.L], P("kv_norm.weight"), self.eps)
        k_pe = rope(kva[:, self.L:], pos, self.rope, self.theta, True)
        kvb = (c_kv @ P("wkv_b.weight").T).view(T, H, self.nope + self.v)
        k_nope, val = kvb[..., : self.nope], kvb[..., self.nope:]
        s = torch.einsum("thd,shd->hts", q_nope, k_nope) + torch.einsum("thd,sd->hts", q_pe, k_pe)
        s = (s * self.sigma).masked_fill(~allowed[None], -math.inf)
        sink_name = f"layers.{l}.attn.sink"
        if sink_name in self.p:
            col = self.p[sink_name].view(H, 1, 1).expand(H, T, 1)
            prob = torch.softmax(torch.cat([s, col], dim=2), dim=2)[..., :T]
        else:
            prob = torch.softmax(s, dim=2)
        o = torch.einsum("hts,shd->thd", prob, val).reshape(T, H * self.v)
        return o @ P("wo.weight").T, c_q, s.detach()

    def kl(self, logits, allowed, scores, real, n_real):
        """SPEC 5-6 over the allowed slots: pi = softmax(logits), p from the detached scores."""
        lse = torch.logsumexp(scores, dim=2, keepdim=True)                      # [H, T, 1], KV-only
        head_sum = torch.exp(scores - lse).nan_to_num(0.0).sum(0) * allowed     # [T, T]
        p = head_sum / head_sum.sum(1, keepdim=True).clamp_min(1e-10)
        lg = torch.where(allowed, logits, torch.full_like(logits, -math.inf))
        log_pi = torch.log_softmax(lg, dim=1)
        term = torch.where(allowed, p * (torch.log(p.clamp_min(1e-10)) - log_pi), torch.zeros_like(p))
        return self.coeff / n_real * term[real].sum()

    def forward(self, tokens, targets, pos, cu, cup, stage):
        start, end, real = (torch.tensor(a) for a in window_bounds(cu, cup))
        T = len(tokens)
        x = self.p["tok_embeddings.weight"][tokens]
        kl_total, sel = 0.0, None
        for l in range(self.n_layers):
            P = lambda n: self.p[f"layers.{l}.{n}"]
            hn = rmsnorm(x, P("attn_norm.weight"), self.eps)
            # c_q is recomputed inside attention; the indexer needs it detached first.
            c_q = rmsnorm(hn @ P("attn.wq_a.weight").T, P("attn.q_norm.weight"), self.eps).detach()
            logits = None
            if self.has_indexer(l):
                logits, inside = self.indexer(l, hn.detach(), c_q, pos, start, end)
                if stage == "sparse":
                    sel = topk_select(logits.detach(), self.K) & inside
            s_ = torch.arange(T)
            window = (s_[None, :] >= start[:, None]) & (s_[None, :] < end[:, None])
            allowed = (sel & window) if stage == "sparse" else window
            a, _, scores = self.attention(l, hn, pos, allowed)
            if logits is not None:
                kl_total = kl_total + self.kl(logits, allowed, scores, real, int(real.sum()))
            x = x + a
            hm = rmsnorm(x, P("mlp_norm.weight"), self.eps)
            gate, up = hm @ P("mlp.w_gate.weight").T, hm @ P("mlp.w_up.weight").T
            x = x + (torch.nn.functional.silu(gate) * up) @ P("mlp.w_down.weight").T
        head = self.p["tok_embeddings.weight"] if self.tied else self.p["lm_head.weight"]
        logits = rmsnorm(x, self.p["norm.weight"], self.eps) @ head.T
        keep = targets != -1
        lm = torch.nn.functional.cross_entropy(logits[keep], targets[keep].long()) if keep.any() else logits.sum() * 0
        total = kl_total if stage == "dense_warmup" else lm + kl_total
        return total, lm, kl_total


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dump", help="file written by `dsa gradcheck --dump`")
    ap.add_argument("--stage", default="sparse", choices=["sparse", "dense_warmup"])
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    with h5py.File(args.dump, "r") as f:
        cfg = f["config"][()]
        cfg = cfg.decode() if isinstance(cfg, bytes) else str(cfg)
        params = {k: f["params"][k][()] for k in f["params"]}
        grads = {k: f["grads"][k][()] for k in f["grads"]}
        b = {k: f["batch"][k][()] for k in f["batch"]}
        ours = f["loss"][()]
    m = Model(cfg, params)
    total, lm, kl = m.forward(torch.tensor(b["tokens"]).long(), torch.tensor(b["targets"]), torch.tensor(b["positions"]),
                              b["cu_seqlens"], b["cu_seqlens_padded"], args.stage)
    total.backward()
    fails = passes = 0

    def report(name, err, tol):
        nonlocal fails, passes
        ok = math.isfinite(err) and err <= tol
        passes, fails = passes + ok, fails + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name:52s} rel err {err:.2e}")

    for name, ref, got in (("loss", total.item(), ours[0]), ("lm loss", lm.item(), ours[1])):
        report(name, abs(ref - got) / max(abs(ref), 1e-12), args.tol)
    # The KL is a small difference of large terms (sum_j p log p - p log pi, each row ~log K), so in
    # fp32 its relative error grows as the KL shrinks: it is held to 1e-5 relative or 1e-7 absolute.
    kl_abs = abs(float(kl) - ours[2])
    report(f"kl loss ({float(kl):.3e}, abs err {kl_abs:.1e})",
           0.0 if kl_abs <= 1e-7 else kl_abs / max(abs(float(kl)), 1e-12), args.tol)
    for name, g in grads.items():
        ref = m.p[name].grad
        ref = torch.zeros_like(m.p[name]) if ref is None else ref
        scale = max(float(ref.abs().max()), 1e-12)
        report(f"grad {name}", float((torch.tensor(g) - ref).abs().max()) / scale, args.tol)
    print(f"{passes} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
