"""PyTorch reference of the DSA ops, written from shared/SPEC.md (sections 0 to 6).

Dense and plain on purpose: windows and slot validity are materialized as boolean masks, every
quantity is float64, and autograd computes the gradients (no hand-written backward). It is the
independent check of the C ops that `dsa op` runs (tests/reference/check_dsa_op.py).
Index inputs are torch int64 tensors; float inputs anything (converted to float64).
"""
import torch

F = torch.float64
NEG_INF = float("-inf")


def window_bounds(cu, cup, query_indices=None):
    """SPEC 0: (start, end, is_real) of the query rows (global padded rows, or query_indices)."""
    cu, cup = cu.long(), cup.long()
    n = cu.numel() - 1
    rows = torch.arange(int(cup[-1])) if query_indices is None else query_indices.long()
    d = (torch.searchsorted(cup, rows, right=True) - 1).clamp(0, n - 1)
    start = cup[d]
    real_end = cup[d] + (cu[d + 1] - cu[d])
    end = torch.maximum(torch.minimum(rows + 1, real_end), start + 1)
    is_real = rows < real_end
    return start, end, is_real


def window_mask(start, end, S):
    """[T, S] bool: key s allowed for query t iff start[t] <= s < end[t]."""
    s = torch.arange(S)
    return (s[None, :] >= start[:, None]) & (s[None, :] < end[:, None])


def valid_slots(idx, S, topk_length=None):
    """SPEC 0: slot j of row t is valid iff 0 <= idx < S and j < topk_length[t] (when given)."""
    idx = idx.long()
    valid = (idx >= 0) & (idx < S)
    if topk_length is not None:
        valid &= torch.arange(idx.shape[1])[None, :] < topk_length.long()[:, None]
    return valid


def gather_rows(x, idx, valid):
    """x[idx] with invalid slots pointing at row 0 (their values are masked out afterwards)."""
    return x[torch.where(valid, idx.long(), torch.zeros_like(idx.long()))]


def sparse_mqa(q, kv, idx, sigma, dv, topk_length=None, sink=None):
    """SPEC 3. Returns out [T,H,dv], lse [T,H] (KV-only, -inf for rows without valid slots).
    Differentiable in q, kv, sink through autograd."""
    T, H, D = q.shape
    S = kv.shape[0]
    valid = valid_slots(idx, S, topk_length)                       # [T, K]
    kv_sel = gather_rows(kv, idx, valid)                           # [T, K, D]
    scores = sigma * torch.einsum("thd,tkd->thk", q, kv_sel)
    scores = scores.masked_fill(~valid[:, None, :], NEG_INF)      # [T, H, K]
    with torch.no_grad():
        lse = torch.logsumexp(scores, dim=-1)
    # Softmax over [slots..., extra column]: the extra column is the sink logit (zero value vector),
    # or, without a sink, 0 for rows with no valid slot (so P = 0 and out = 0) and -inf otherwise.
    if sink is not None:
        extra = sink[None, :, None].expand(T, H, 1)
    else:
        empty = ~valid.any(dim=1)
        extra = torch.where(empty, 0.0, NEG_INF).to(q.dtype)[:, None, None].expand(T, H, 1)
    P = torch.softmax(torch.cat([scores, extra], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("thk,tkd->thd", P, kv_sel[..., :dv])
    return out, lse


def indexer_logits(q, k, w, start, end):
    """SPEC 1: I[t,s] = sum_h w[t,h] ReLU(q[t,h].k[s]) inside the window, -inf outside. [T, S]."""
    r = torch.einsum("thd,sd->ths", q, k)
    logits = torch.einsum("th,ths->ts", w, torch.relu(r))
    return logits.masked_fill(~window_mask(start, end, k.shape[0]), NEG_INF)


def indexer_gather_logits(q, k, w, idx, topk_length=None):
    """Indexer logits at the selected slots [T, K], -inf on invalid slots."""
    valid = valid_slots(idx, k.shape[0], topk_length)
    k_sel = gather_rows(k, idx, valid)                             # [T, K, D]
    r = torch.einsum("thd,tkd->thk", q, k_sel)
    logits = torch.einsum("th,thk->tk", w, torch.relu(r))
    return logits.masked_fill(~valid, NEG_INF)


def topk(logits, K):
    """SPEC 2: per row the K largest finite logits (ties -> lower key), written in ascending key
    order, then -1. Returns idx (int64), topk_length, score (-inf on invalid slots)."""
    T, S = logits.shape
    idx = torch.full((T, K), -1, dtype=torch.long)
    length = torch.zeros(T, dtype=torch.long)
    score = torch.full((T, K), NEG_INF, dtype=logits.dtype)
    keys = torch.arange(S)
    for t in range(T):
        row = logits[t]
        finite = torch.isfinite(row)
        cand = keys[finite]
        vals = row[finite]
        # Sort by (score descending, key ascending): stable sort on key order, then on -score.
        order = torch.sort(-vals, stable=True).indices
        chosen = torch.sort(cand[order[:K]]).values
        n = chosen.numel()
        idx[t, :n] = chosen
        length[t] = n
        score[t, :n] = row[chosen]
    return idx, length, score


def attn_score_headsum(q, kv, idx, lse, sigma, topk_length=None):
    """SPEC 5 sparse: sum_h exp(sigma q.kv[idx] - lse) at the valid slots, 0 elsewhere. [T, K]."""
    valid = valid_slots(idx, kv.shape[0], topk_length)
    kv_sel = gather_rows(kv, idx, valid)
    s = sigma * torch.einsum("thd,tkd->thk", q, kv_sel) - lse[:, :, None]
    e = torch.exp(s.masked_fill(~valid[:, None, :], NEG_INF))
    return e.sum(dim=1)


def attn_lse_dense(q, kv, start, end, sigma):
    """KV-only lse of dense attention over the window. [T, H]."""
    s = sigma * torch.einsum("thd,sd->ths", q, kv)
    s = s.masked_fill(~window_mask(start, end, kv.shape[0])[:, None, :], NEG_INF)
    return torch.logsumexp(s, dim=-1)


def attn_score_headsum_dense(q, kv, start, end, lse, sigma):
    """SPEC 5 dense: sum_h exp(sigma q.kv[s] - lse) inside the window, 0 outside. [T, S]."""
    s = sigma * torch.einsum("thd,sd->ths", q, kv) - lse[:, :, None]
    s = s.masked_fill(~window_mask(start, end, kv.shape[0])[:, None, :], NEG_INF)
    return torch.exp(s).sum(dim=1)


def normalize_rows_l1(x):
    return x / x.abs().sum(dim=-1, keepdim=True).clamp_min(1e-10)


def softmax_rows(logits):
    """pi: softmax over the finite entries of each row; -inf entries and all -inf rows give 0."""
    finite = torch.isfinite(logits)
    has = finite.any(dim=-1, keepdim=True)
    safe = torch.where(has, logits, torch.zeros_like(logits))
    return torch.softmax(safe, dim=-1) * finite


def kl_indexer_loss(logits, target, is_real, coeff, n_rows):
    """SPEC 6: c/N sum over real rows and valid (finite-logit) slots of p (log max(p,1e-10) - log pi)."""
    valid = torch.isfinite(logits)
    has = valid.any(dim=-1, keepdim=True)
    safe = torch.where(has, logits, torch.zeros_like(logits))
    log_pi = torch.log_softmax(safe, dim=-1)
    term = target * (torch.log(target.clamp_min(1e-10)) - log_pi)
    keep = valid & is_real[:, None]
    return coeff / n_rows * torch.where(keep, term, torch.zeros_like(term)).sum()


def kl_indexer_op(index_q, index_k, w, q, kv, cu, cup, sigma, coeff, mode, idx=None, topk_length=None,
                  query_indices=None):
    """What `dsa op kl_indexer_loss` computes: loss, predict, target and the indexer gradients."""
    index_q = index_q.detach().to(F).requires_grad_()
    index_k = index_k.detach().to(F).requires_grad_()
    w = w.detach().to(F).requires_grad_()
    q, kv = q.detach().to(F), kv.detach().to(F)
    start, end, is_real = window_bounds(cu, cup, query_indices)
    n_real = max(int(is_real.sum()), 1)
    with torch.no_grad():
        if mode == "sparse":
            _, lse = sparse_mqa(q, kv, idx, sigma, kv.shape[1], topk_length)
            hs = attn_score_headsum(q, kv, idx, lse, sigma, topk_length)
        else:
            lse = attn_lse_dense(q, kv, start, end, sigma)
            hs = attn_score_headsum_dense(q, kv, start, end, lse, sigma)
        target = normalize_rows_l1(hs)
    if mode == "sparse":
        logits = indexer_gather_logits(index_q, index_k, w, idx, topk_length)
    else:
        logits = indexer_logits(index_q, index_k, w, start, end)
    loss = kl_indexer_loss(logits, target, is_real, coeff, n_real)
    loss.backward()
    return {"loss": loss.detach(), "predict": softmax_rows(logits.detach()), "target": target,
            "d_index_q": index_q.grad, "d_w": w.grad, "d_index_k": index_k.grad}


def sparse_mqa_op(q, kv, idx, dout, sigma, dv, topk_length=None, sink=None):
    """What `dsa op sparse_mqa` computes: out, lse and the gradients for upstream dout."""
    q = q.detach().to(F).requires_grad_()
    kv = kv.detach().to(F).requires_grad_()
    if sink is not None:
        sink = sink.detach().to(F).requires_grad_()
    out, lse = sparse_mqa(q, kv, idx, sigma, dv, topk_length, sink)
    (out * dout.to(F)).sum().backward()
    res = {"out": out.detach(), "lse": lse, "dq": q.grad, "dkv": kv.grad}
    if sink is not None:
        res["dsink"] = sink.grad
    return res


def indexer_topk_op(q, k, w, cu, cup, K, query_indices=None):
    """What `dsa op indexer_topk` computes (ratio 1)."""
    start, end, _ = window_bounds(cu, cup, query_indices)
    with torch.no_grad():
        logits = indexer_logits(q.to(F), k.to(F), w.to(F), start, end)
    idx, length, score = topk(logits, K)
    return {"idx": idx, "topk_length": length, "score": score}
