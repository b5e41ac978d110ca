#!/usr/bin/env python3
"""The PyTorch peer of a `dsa train` step (issue 7, last row): the same DSA model as layers/ (MLA with
a lightning indexer, SwiGLU MLP, tied or untied LM head) written the way a PyTorch user would, with
dense masked attention ([H, T, T] scores, the top-k applied as a mask), the dense indexer logits and
torch.topk, the KL indexer loss, bf16 autocast over fp32 weights, and AdamW (fused when available).

It trains on one packed document of T tokens (random tokens: speed does not depend on them) and
prints the median step time, tokens/s and peak memory over the timed steps, one markdown row:
    python3 bench/torch_model.py --config configs/small.cfg [--T 8192] [--steps 8] [--warmup 2]
Compare with `dsa train configs/small.cfg train.stage=sparse ...` (scripts/gpu_scaling.sh, 1 GPU).
"""
import argparse
import configparser
import math
import statistics
import time

import torch
import torch.nn.functional as F


def load_config(path):
    cp = configparser.ConfigParser(inline_comment_prefixes=("#",))
    cp.read(path)
    m = cp["model"]
    get = lambda k, d: type(d)(m.get(k, str(d))) if not isinstance(d, bool) else m.get(k, str(d)).lower() == "true"
    return dict(V=get("vocab_size", 0), L=get("n_layers", 0), d=get("d_model", 0), H=get("n_heads", 0),
                Lq=get("q_lora_rank", 0), Lkv=get("kv_lora_rank", 0), nope=get("qk_nope_head_dim", 0),
                rope=get("qk_rope_head_dim", 0), v=get("v_head_dim", 0), F=get("mlp_hidden", 0),
                HI=get("index_n_heads", 0), DI=get("index_head_dim", 0), K=get("index_topk", 0),
                sink=get("attn_sink", False), tied=get("tie_embeddings", True), std=get("init_std", 0.02))


def rope(x, pos, dims, theta=10000.0):
    """Interleaved-pair RoPE on the first `dims` of the last axis (layout differences do not change cost)."""
    j = torch.arange(dims // 2, device=x.device, dtype=torch.float32)
    ang = pos[:, None].float() * theta ** (-2.0 * j / dims)
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [dims // 2]
    cos, sin = ang.cos().view(shape), ang.sin().view(shape)
    a, b = x[..., 0:dims:2], x[..., 1:dims:2]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return torch.cat((out.to(x.dtype), x[..., dims:]), dim=-1)


def rmsnorm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype) * w


class DSAModel(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        P = lambda *s: torch.nn.Parameter(torch.randn(*s) * c["std"])
        ones = lambda n: torch.nn.Parameter(torch.ones(n))
        self.emb = P(c["V"], c["d"])
        self.lm_head = self.emb if c["tied"] else P(c["V"], c["d"])
        self.final_norm = ones(c["d"])
        self.layers = torch.nn.ModuleList()
        for _ in range(c["L"]):
            l = torch.nn.Module()
            l.attn_norm, l.mlp_norm = ones(c["d"]), ones(c["d"])
            l.wq_a, l.q_norm = P(c["Lq"], c["d"]), ones(c["Lq"])
            l.wq_b = P(c["H"] * (c["nope"] + c["rope"]), c["Lq"])
            l.wkv_a, l.kv_norm = P(c["Lkv"] + c["rope"], c["d"]), ones(c["Lkv"])
            l.wkv_b = P(c["H"] * (c["nope"] + c["v"]), c["Lkv"])
            l.wo = P(c["d"], c["H"] * c["v"])
            l.sink = torch.nn.Parameter(torch.zeros(c["H"])) if c["sink"] else None
            l.iq = P(c["HI"] * c["DI"], c["Lq"])
            l.ik = P(c["DI"], c["d"])
            l.ik_norm_w, l.ik_norm_b = ones(c["DI"]), torch.nn.Parameter(torch.zeros(c["DI"]))
            l.iw = P(c["HI"], c["d"])
            l.w_gate, l.w_up, l.w_down = P(c["F"], c["d"]), P(c["F"], c["d"]), P(c["d"], c["F"])
            self.layers.append(l)

    def forward(self, tokens, targets, pos, causal):
        c = self.c
        T, H = tokens.shape[0], c["H"]
        x = self.emb[tokens]
        kl_total = 0.0
        for l in self.layers:
            h = rmsnorm(x, l.attn_norm)
            c_q = rmsnorm(h @ l.wq_a.T, l.q_norm)
            # Lightning indexer on detached inputs: dense logits, top-k, then a boolean mask.
            hd, cqd = h.detach(), c_q.detach()
            iq = rope((cqd @ l.iq.T).view(T, c["HI"], c["DI"]), pos, c["rope"])
            ik = rope(F.layer_norm((hd @ l.ik.T).float(), (c["DI"],), l.ik_norm_w, l.ik_norm_b, 1e-6).to(iq.dtype), pos, c["rope"])
            iw = (hd @ l.iw.T) / math.sqrt(c["HI"] * c["DI"])
            logits = torch.einsum("th,ths->ts", iw, torch.relu(torch.einsum("thd,sd->ths", iq, ik)))
            logits = logits.float().masked_fill(~causal, -math.inf)
            sel = torch.zeros_like(causal)
            sel.scatter_(1, logits.detach().topk(min(c["K"], T), dim=1).indices, True)
            allowed = sel & causal
            # MLA, dense masked attention per head.
            q = (c_q @ l.wq_b.T).view(T, H, c["nope"] + c["rope"])
            q = torch.cat((q[..., : c["nope"]], rope(q[..., c["nope"]:], pos, c["rope"])), -1)
            kva = h @ l.wkv_a.T
            c_kv = rmsnorm(kva[:, : c["Lkv"]], l.kv_norm)
            k_pe = rope(kva[:, c["Lkv"]:], pos, c["rope"])
            kvb = (c_kv @ l.wkv_b.T).view(T, H, c["nope"] + c["v"])
            k = torch.cat((kvb[..., : c["nope"]], k_pe[:, None, :].expand(T, H, c["rope"])), -1)
            s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(c["nope"] + c["rope"])
            s = s.float().masked_fill(~allowed[None], -math.inf)
            if l.sink is not None:
                prob = torch.softmax(torch.cat((s, l.sink.view(H, 1, 1).expand(H, T, 1)), 2), 2)[..., :T]
            else:
                prob = torch.softmax(s, 2)
            o = torch.einsum("hts,shd->thd", prob.to(kvb.dtype), kvb[..., c["nope"]:]).reshape(T, H * c["v"])
            x = x + o @ l.wo.T
            # KL: head-summed detached attention as the target over the selected keys.
            with torch.no_grad():
                p = prob.detach().sum(0)
                p = p / p.sum(1, keepdim=True).clamp_min(1e-10)
            log_pi = torch.log_softmax(logits.masked_fill(~allowed, -math.inf), 1)
            kl_total = kl_total + torch.where(allowed, p * (p.clamp_min(1e-10).log() - log_pi), 0.0).sum() / T
            hm = rmsnorm(x, l.mlp_norm)
            x = x + (F.silu(hm @ l.w_gate.T) * (hm @ l.w_up.T)) @ l.w_down.T
        out = rmsnorm(x, self.final_norm) @ self.lm_head.T
        return F.cross_entropy(out.float(), targets) + kl_total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.cfg")
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a quick check of the script")
    a = ap.parse_args()
    c = load_config(a.config)
    dev = a.device
    cuda = dev == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    model = DSAModel(c).to(dev)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    T = a.T
    tokens = torch.randint(0, c["V"], (T,), device=dev)
    targets = torch.roll(tokens, -1)
    pos = torch.arange(T, device=dev)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(tokens, targets, pos, causal)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"| pytorch {torch.__version__} (dense masked attention, bf16 autocast) | {T} | {n_params} | {ms:.1f} | "
          f"{T / (ms / 1e3):.0f} | {(torch.cuda.max_memory_allocated() if cuda else 0) / 2**20:.0f} | {float(loss):.4f} |")


if __name__ == "__main__":
    main()
