"""PyTorch eager baseline for `gemma-tuner bench`: the same Gemma 3 shape, batch and step, in plain PyTorch.

What Hugging Face transformers + PEFT do for a Gemma 3 text model, written out so it runs with nothing but
torch: scaled embedding, (1+w) RMSNorm in float32, GQA attention with QK-norm, RoPE and a sliding or causal
mask, GeGLU MLP, tied LM head over every position, cross-entropy over the shifted labels (sum / count), then
AdamW. LoRA branches are PEFT's (A kaiming-uniform, B zero, scaling alpha/r, every linear targeted).

    python3 scripts/torch_baseline.py --method lora|full|forward [--steps 3] [--threads 2]

Prints one JSON line: tokens/s (median step), peak RSS (ru_maxrss). Used only to measure; nothing in the app
or its tests needs PyTorch.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w.float())).to(x.dtype)


class Linear(torch.nn.Module):
    def __init__(self, fin, fout, r, alpha):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(fout, fin) * 0.02)
        self.r = r
        if r:
            self.lora_A = torch.nn.Parameter(torch.empty(r, fin).uniform_(-1 / math.sqrt(fin), 1 / math.sqrt(fin)))
            self.lora_B = torch.nn.Parameter(torch.zeros(fout, r))
            self.scaling = alpha / r

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.r:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, a, r):
        super().__init__()
        H, D, nH, nKv, I = a.hidden, a.head_dim, a.heads, a.kv_heads, a.intermediate
        self.nH, self.nKv, self.D = nH, nKv, D
        self.q_proj = Linear(H, nH * D, r, 16)
        self.k_proj = Linear(H, nKv * D, r, 16)
        self.v_proj = Linear(H, nKv * D, r, 16)
        self.o_proj = Linear(nH * D, H, r, 16)
        self.gate_proj = Linear(H, I, r, 16)
        self.up_proj = Linear(H, I, r, 16)
        self.down_proj = Linear(I, H, r, 16)
        self.norms = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros(H)) for k in ("inp", "post_attn", "pre_ff", "post_ff")})
        self.q_norm = torch.nn.Parameter(torch.zeros(D))
        self.k_norm = torch.nn.Parameter(torch.zeros(D))

    def forward(self, h, cos, sin, mask):
        B, T, _ = h.shape
        x = rms_norm(h, self.norms["inp"])
        q = rms_norm(self.q_proj(x).view(B, T, self.nH, self.D), self.q_norm).transpose(1, 2)
        k = rms_norm(self.k_proj(x).view(B, T, self.nKv, self.D), self.k_norm).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nKv, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nH // self.nKv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        # HF's eager attention: matmul, + mask, softmax in float32, matmul.
        s = torch.matmul(q, k.transpose(2, 3)) * self.D ** -0.5 + mask
        o = torch.matmul(torch.softmax(s.float(), dim=-1).to(q.dtype), v)
        o = o.transpose(1, 2).reshape(B, T, self.nH * self.D)
        h = h + rms_norm(self.o_proj(o), self.norms["post_attn"])
        x = rms_norm(h, self.norms["pre_ff"])
        m = self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))
        return h + rms_norm(m, self.norms["post_ff"])


class Model(torch.nn.Module):
    def __init__(self, a, r):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.randn(a.vocab, a.hidden) * 0.02)
        self.layers = torch.nn.ModuleList([Layer(a, r) for _ in range(a.layers)])
        self.norm = torch.nn.Parameter(torch.zeros(a.hidden))
        self.scale = math.sqrt(a.hidden)
        D, T = a.head_dim, a.seq
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
        ang = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((ang, ang), dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self.mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)

    def forward(self, ids):
        h = F.embedding(ids, self.embed) * self.scale
        for layer in self.layers:
            h = layer(h, self.cos, self.sin, self.mask)
        h = rms_norm(h, self.norm)
        return F.linear(h, self.embed)  # [B,T,V], every position, as HF computes it


def causal_lm_loss(logits, labels):
    # transformers' ForCausalLMLoss: upcast, shift, cross-entropy summed over counted tokens / count.
    logits = logits.float()
    shift = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
    n = (shift != -100).sum()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), shift.view(-1), ignore_index=-100, reduction="sum") / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--method", default="lora", choices=["lora", "full", "forward"])
    p.add_argument("--hidden", type=int, default=640)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=262144)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(a.threads)
    model = Model(a, a.rank if a.method == "lora" else 0)
    if a.method == "lora":
        for n, q in model.named_parameters():
            q.requires_grad_("lora_" in n)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if a.method != "forward" else None
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        if a.method == "forward":
            with torch.no_grad():
                loss = causal_lm_loss(model(ids), ids)
        else:
            loss = causal_lm_loss(model(ids), ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        float(loss)
        if s:
            times.append(time.perf_counter() - t0)
    times.sort()
    step = times[len(times) // 2]
    print(json.dumps({
        "method": a.method,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "seq": a.seq,
        "layers": a.layers,
        "vocab": a.vocab,
        "tokens_per_second": a.batch * a.seq / step,
        "step_ms": step * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_parameters": sum(q.numel() for q in params),
        "optimizer_included": a.method != "forward",
    }))


if __name__ == "__main__":
    main()
