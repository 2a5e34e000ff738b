#!/usr/bin/env python3
"""Times one training step of daa's networks in PyTorch, for `cargo xtask bench`.

Uses the project's own PyTorch re-implementation (reference_nets.py) at the same sizes as
daa's presets, the same optimizer (Adam, one over both networks) and the same step as daa's
engine (vanilla: Charbonnier on the source pair; da: plus two diffusion passes with shuffled /
residual-swapped conditions). Prints one JSON line per configuration: median milliseconds,
the FLOPs of one step (forward + backward, counted by torch.utils.flop_counter) and the
process's peak RSS (run one method per process for a per-method peak).

The PyTorch side is set up to be as fast as PyTorch gets on a CPU, so that the ratio is
honest: channels_last activations and weights (oneDNN's fast conv layout), in-place
LeakyReLU, Adam with `fused=True` (one kernel over all parameters), gradients set to None
instead of zeroed, data created outside the timed region, and no autograd graph kept between
steps.

    pip install torch
    python3 scripts/bench_torch.py --preset cpu --threads 2
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_nets import CondUNet, UNet  # noqa: E402

PRESETS = {
    # name: (restorer kwargs, diffusion kwargs, batch, patch)
    "cpu": (dict(width=16, depth=4), dict(width=16, mults=(1, 2, 4), res_blocks=1, groups=8, head_ch=32), 8, 48),
    "paper": (dict(width=64, depth=4), dict(), 24, 128),
    # the paper networks at a CPU-sized batch (exercises the 64-512 channel convs)
    "paper-small": (dict(width=64, depth=4), dict(), 2, 64),
}


def abar():
    betas = torch.linspace(1e-6, 1e-2, 1000, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def da_loss(R, D, x_s, y_s, x_r, ab):
    b = x_s.shape[0]
    r_s, r_r = R(x_s), R(x_r)
    rec = torch.sqrt((x_s + r_s - y_s) ** 2 + 1e-6).mean()
    t = torch.randint(1, 1000, (b,))
    gamma = (ab[t] + (ab[t - 1] - ab[t]) * torch.rand(b, dtype=torch.float64)).float()
    y0 = y_s * 2 - 1
    eps = torch.randn_like(y0)
    g = gamma.view(b, 1, 1, 1)
    y_noisy = g.sqrt() * y0 + (1 - g).sqrt() * eps

    def cond(a, c):
        m = (torch.rand(b) < 0.5).view(b, 1, 1, 1)
        a, c = a * 2 - 1, c * 2 - 1
        return torch.cat([y_noisy, torch.where(m, c, a), torch.where(m, a, c)], 1)

    d_pos = ((eps - D(cond(x_s + r_s, x_r + r_r), gamma)) ** 2).mean()
    d_neg = ((eps - D(cond(x_s + r_r, x_r + r_s), gamma)) ** 2).mean()
    hinge = torch.relu(d_pos - d_neg + 0.1)
    return rec + 0.2 * (d_pos + hinge) / 2


def set_precision(precision, device):
    """tf32: PyTorch's defaults on a GPU (TF32 convs, f32 matmuls); f32: strict fp32; bf16:
    autocast to bfloat16 (weights and Adam in f32)."""
    if device != "cpu":
        torch.backends.cudnn.allow_tf32 = precision != "f32"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def infer(preset, size, steps, warmup, device, precision):
    """Median milliseconds of R alone on one size x size image (no gradients)."""
    rk = PRESETS[preset][0]
    torch.manual_seed(0)
    R = UNet(**rk).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    ctx = set_precision(precision, device)
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            with ctx:
                y = x + R(x)
            if device != "cpu":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(method, preset, steps, warmup, device, channels_last, fused, precision="tf32"):
    """Median ms of a step, its FLOPs (forward + backward, counted once before timing)."""
    rk, dk, b, p = PRESETS[preset]
    torch.manual_seed(0)
    R = UNet(**rk).to(device).train()
    D = CondUNet(**dk).to(device).train()
    for m in R.modules():
        if isinstance(m, torch.nn.LeakyReLU):
            m.inplace = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    R, D = R.to(memory_format=fmt), D.to(memory_format=fmt)
    params = list(R.parameters()) + (list(D.parameters()) if method == "da" else [])
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                           **({"fused": True} if fused else {}))
    x_s, y_s, x_r = (torch.rand(b, 3, p, p, device=device).contiguous(memory_format=fmt) for _ in range(3))
    ab = abar().to(device)
    ctx = set_precision(precision, device)

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx:
            if method == "vanilla":
                loss = torch.sqrt((x_s + R(x_s) - y_s) ** 2 + 1e-6).mean()
            else:
                loss = da_loss(R, D, x_s, y_s, x_r, ab)
        loss.backward()
        return loss

    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), flops


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--methods", default="vanilla,da")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-channels-last", action="store_true", help="NCHW activations (slower on CPU)")
    ap.add_argument("--no-fused-adam", action="store_true", help="torch's default for-loop Adam")
    ap.add_argument("--precision", default="tf32", choices=["tf32", "f32", "bf16"],
                    help="GPU math: tf32 (PyTorch's defaults), f32 (strict), bf16 (autocast)")
    ap.add_argument("--infer", type=int, default=0, metavar="SIZE",
                    help="also time R alone on one SIZE x SIZE image (method 'infer')")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    methods = [m for m in a.methods.split(",") if m] + (["infer"] if a.infer else [])
    for method in methods:
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        line = {"impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                "preset": a.preset, "method": method, "precision": a.precision}
        if method == "infer":
            line["median_ms"] = round(infer(a.preset, a.infer, a.steps, a.warmup, a.device, a.precision), 2)
        else:
            ms, flops = bench(method, a.preset, a.steps, a.warmup, a.device, not a.no_channels_last,
                              not a.no_fused_adam, a.precision)
            line.update({"median_ms": round(ms, 2), "gflop": round(flops / 1e9, 3),
                         "gflops": round(flops / 1e6 / ms, 1), "channels_last": not a.no_channels_last,
                         "fused_adam": not a.no_fused_adam})
        line["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if a.device.startswith("cuda"):
            line["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(line), flush=True)

if __name__ == "__main__":
    main()
