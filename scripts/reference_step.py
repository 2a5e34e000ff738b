#!/usr/bin/env python3
"""The project's own PyTorch version of one Denoising-as-Adaptation training step, for parity.

Written from docs/method.md section 2 (the step, its value range and lambda ramp) and 3 (the schedule), as
`scripts/reference_nets.py` is for the networks (whose modules it reuses). Running it writes the
step-parity fixtures that `crates/daa-train/tests/step_parity.rs` replays:

    pip install torch safetensors numpy
    python3 scripts/reference_step.py        # -> crates/daa-train/tests/data/step/*.safetensors

`init.safetensors` holds the initial weights of a small restorer U-Net (width 4, depth 3) and
CondUNet (width 8, mults 1-2, one block per level, 4 groups, heads of 8; dropout 0.2), drawn as
the reference initialises them (Kaiming normal, fan-in, gain sqrt(2), on every conv and linear;
biases zero; GroupNorm 1 / 0), and two batches of four [0, 1] images each (x_s, y_s, x_r and an
unpaired clean image for da-ex), 2 x 3 x 8 x 12 (non-square on purpose).

Each scenario file (one per method / ablation / value range) holds everything random in three
steps, fixed here: per step the diffusion steps t, the noise levels gamma (f32, as the network
sees them), the noise eps, both swap masks (u8, 1 = swap) and every dropout mask (u8, 1 = keep,
flat, in the order the forward passes consume them: positive pass then negative pass, residual
blocks in forward order, row-major inside each); the losses of each step; the gradients of the
first step; and the weights after the third Adam step. Step k uses batch k % 2. The scenario's
settings are in the file's metadata ("settings", JSON).

Value ranges: the images are stored in [0, 1]. A "unit" scenario runs restorer, Charbonnier loss
and diffusion on them as they are; a "signed" one maps every image to [-1, 1] first (2 x - 1), as
the reference does for deraining and deblurring (docs/method.md section 2, "Value range").

Lambda: the reference ramps over epochs counted from 1, `p = min(epoch / 300, 1)`, constant
within an epoch. In samples seen before the step, s: `p = min((floor(s / q) + 1) * q / R, 1)`
with q the epoch length and R = 300 q. The fixtures use a toy ramp (R = 6 samples, q = 2), so the
three steps have p = 1/3, 2/3, 1.
"""
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from reference_nets import CondUNet, ResBlock, UNet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "daa-train" / "tests" / "data" / "step"

B, H, W = 2, 8, 12
STEPS = 3
RESTORER = dict(width=4, depth=3)
DIFFUSION = dict(width=8, mults=(1, 2), res_blocks=1, head_ch=8, groups=4, dropout=0.2)
CHARBONNIER_EPS = 1e-3
MARGIN = 0.1
LAMBDA_MAX = 0.2
RAMP_SAMPLES, RAMP_QUANTUM = 6, 2


def alpha_bars():
    """docs/method.md section 3: beta = linspace(1e-6, 1e-2, 1000) in f64, abar = cumprod(1 - beta)."""
    return np.cumprod(1.0 - np.linspace(1e-6, 1e-2, 1000, dtype=np.float64))


def lambda_at(samples_seen):
    """docs/method.md section 2 (lambda ramp) in samples, counted like the reference's epochs (from 1)."""
    p = min((samples_seen // RAMP_QUANTUM + 1) * RAMP_QUANTUM / RAMP_SAMPLES, 1.0)
    return LAMBDA_MAX * (2.0 / (1.0 + math.exp(-5.0 * p)) - 1.0)


class MaskDropout(nn.Module):
    """Dropout whose keep-masks come from a queue (replay) or are drawn and recorded (draw)."""

    def __init__(self, p, source):
        super().__init__()
        self.p, self.source = p, source

    def forward(self, x):
        if not self.training:
            return x
        keep = self.source.next(x.shape)
        return x * (keep.to(x.dtype) * torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype))


class MaskSource:
    def __init__(self, p, gen):
        self.p, self.gen, self.replay, self.drawn = p, gen, None, []

    def next(self, shape):
        n = math.prod(shape)
        if self.p == 0:
            return torch.ones(n, dtype=torch.uint8).reshape(shape)
        if self.replay is not None:
            keep, self.replay = self.replay[:n], self.replay[n:]
        else:
            keep = (torch.rand(n, generator=self.gen) >= self.p).to(torch.uint8)
            self.drawn.append(keep)
        return keep.reshape(shape)


def kaiming_init(module, gen):
    """The reference's init: Kaiming normal (fan-in, gain sqrt(2)) on every conv and linear,
    zero biases; GroupNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                m.bias.zero_()
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_networks(gen, masks):
    restorer = UNet(**RESTORER)
    d = dict(DIFFUSION)
    p = d.pop("dropout")
    diffusion = CondUNet(dropout=p, **d)
    for m in diffusion.modules():
        if isinstance(m, ResBlock):
            m.out_layers[2] = MaskDropout(p, masks)
    # reference_nets computes the gamma embedding in float32; cast it to the network's dtype
    # (a no-op in float32, needed for the float64 rerun).
    diffusion.cond_embed.register_forward_pre_hook(lambda m, a: tuple(x.to(m[0].weight.dtype) for x in a))
    kaiming_init(restorer, gen)
    kaiming_init(diffusion, gen)
    return restorer, diffusion


def make_batches(gen):
    """Two batches of smooth [0, 1] images: clean y, degraded x_s = y + AWGN (sigma 0.1, not
    clamped, as the reference's synthetic noise), a "real" x_r with other content and
    correlated noise, and an unpaired clean image."""

    def smooth(n):
        low = torch.rand(n, 3, H // 4, W // 4, generator=gen)
        up = nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=True)
        return (0.8 * up + 0.2 * torch.rand(n, 3, H, W, generator=gen)).clamp(0, 1)

    batches = []
    for _ in range(2):
        y = smooth(B)
        x_s = y + 0.1 * torch.randn(B, 3, H, W, generator=gen)
        noise = torch.randn(B, 1, H, W, generator=gen).expand(B, 3, H, W)
        x_r = (smooth(B) + 0.08 * noise).clamp(0, 1)
        batches.append(dict(source_input=x_s, source_target=y, target_input=x_r, ex_clean=smooth(B)))
    return batches


SCENARIOS = {
    # name: method, range, lr, shuffle, contrastive, t range
    "vanilla_unit": dict(method="vanilla", range="unit", lr=1e-4),
    "vanilla_signed": dict(method="vanilla", range="signed", lr=5e-5),
    "da_unit": dict(method="da", range="unit", lr=1e-4),
    "da_signed": dict(method="da", range="signed", lr=5e-5),
    "no_shuffle": dict(method="da", range="unit", lr=1e-4, shuffle=False),
    "no_contrastive": dict(method="da", range="unit", lr=1e-4, contrastive=False),
    "t_900_999": dict(method="da", range="unit", lr=1e-4, t_min=900, t_max=999),
    "da_ex": dict(method="da_ex", range="unit", lr=1e-4),
}


def settings(name):
    s = dict(shuffle=True, contrastive=True, t_min=1, t_max=999)
    s.update(SCENARIOS[name])
    s.update(batch=B, height=H, width=W, steps=STEPS, margin=MARGIN, charbonnier_eps=CHARBONNIER_EPS,
             lambda_max=LAMBDA_MAX, ramp_samples=RAMP_SAMPLES, ramp_quantum=RAMP_QUANTUM,
             adam=dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
             restorer=RESTORER, diffusion=dict(DIFFUSION, mults=list(DIFFUSION["mults"])))
    return s


def draw(s, gen, shape):
    """One step's draws (docs/method.md section 2, items 1, 2, 4, 5)."""
    abar = alpha_bars()
    t = torch.randint(s["t_min"], s["t_max"] + 1, (B,), generator=gen)
    u = torch.rand(B, generator=gen, dtype=torch.float64).numpy()
    lo, hi = abar[t.numpy()], abar[t.numpy() - 1]
    gamma = torch.from_numpy(lo + (hi - lo) * u).float()
    eps = torch.randn(shape, generator=gen)
    coin = lambda: (torch.rand(B, generator=gen) < 0.5).to(torch.uint8)
    pos = coin() if s["shuffle"] else torch.zeros(B, dtype=torch.uint8)
    negative = s["method"] == "da" and s["contrastive"]
    neg = (coin() if s["shuffle"] else torch.zeros(B, dtype=torch.uint8)) if negative else None
    return dict(t=t, gamma=gamma, eps=eps, pos_swap=pos, neg_swap=neg)


def swap(a, b, mask):
    m = mask.bool()[:, None, None, None]
    return torch.where(m, b, a), torch.where(m, a, b)


def step_losses(s, restorer, diffusion, batch, d, lam):
    """docs/method.md section 2, items 3-7, in the scenario's value range."""
    to_range = (lambda x: x) if s["range"] == "unit" else (lambda x: 2 * x - 1)
    x_s, y_s = to_range(batch["source_input"]), to_range(batch["source_target"])
    r_s = restorer(x_s)
    yhat_s = x_s + r_s
    rec = torch.sqrt((yhat_s - y_s) ** 2 + s["charbonnier_eps"] ** 2).mean()
    out = dict(rec=rec)
    if s["method"] == "vanilla":
        out["total"] = rec
        return out
    x_r = to_range(batch["target_input"])
    r_r = restorer(x_r)
    clean = to_range(batch["ex_clean"]) if s["method"] == "da_ex" else y_s
    g = d["gamma"][:, None, None, None]
    y_noisy = torch.sqrt(g) * clean + torch.sqrt(1 - g) * d["eps"]

    def pass_(a, b, mask):
        a, b = swap(a, b, mask)
        pred = diffusion(torch.cat([y_noisy, a, b], 1), d["gamma"])
        return ((d["eps"] - pred) ** 2).mean()

    d_pos = pass_(yhat_s, x_r + r_r, d["pos_swap"])
    out["d_pos"] = d_pos
    if d["neg_swap"] is not None:
        d_neg = pass_(x_s + r_r, x_r + r_s, d["neg_swap"])
        hinge = torch.relu(d_pos - d_neg + s["margin"])
        out.update(d_neg=d_neg, contrastive=hinge, noise=(d_pos + hinge) / 2)
    else:
        out["noise"] = d_pos
    out["total"] = rec + lam * out["noise"]
    return out


def run(s, init, batches, gen, masks, dtype=torch.float32, draws=None, replay=None):
    """Three steps with Adam; returns (draws, losses, grads of step 0, final weights)."""
    restorer, diffusion = build_networks(torch.Generator().manual_seed(0), masks)
    restorer.load_state_dict({k[len("restorer."):]: v for k, v in init.items() if k.startswith("restorer.")})
    diffusion.load_state_dict({k[len("diffusion."):]: v for k, v in init.items() if k.startswith("diffusion.")})
    restorer.to(dtype).train()
    diffusion.to(dtype).train()
    nets = [("restorer", restorer)] + ([("diffusion", diffusion)] if s["method"] != "vanilla" else [])
    params = [p for _, n in nets for p in n.parameters()]
    a = s["adam"]
    opt = torch.optim.Adam(params, lr=s["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                           weight_decay=a["weight_decay"])
    masks.replay = replay
    draws_out, losses, grads0 = [], [], {}
    for k in range(STEPS):
        batch = {n: v.to(dtype) for n, v in batches[k % 2].items()}
        if s["method"] == "vanilla":
            d = {}
        else:
            d = draws[k] if draws is not None else draw(s, gen, batch["source_target"].shape)
            d = {n: (v.to(dtype) if v is not None and v.is_floating_point() else v) for n, v in d.items()}
        draws_out.append(d)
        lam = lambda_at(k * B) if s["method"] != "vanilla" else 0.0
        n_masks = len(masks.drawn)
        opt.zero_grad(set_to_none=True)
        out = step_losses(s, restorer, diffusion, batch, d, lam)
        out["total"].backward()
        d["dropout"] = torch.cat(masks.drawn[n_masks:]) if replay is None and len(masks.drawn) > n_masks else None
        if k == 0:
            for prefix, net in nets:
                for n, p in net.named_parameters():
                    grads0[f"{prefix}.{n}"] = p.grad.detach().clone()
        opt.step()
        losses.append({n: v.item() for n, v in out.items()} | {"lambda": lam})
    final = {f"{prefix}.{n}": v.detach().clone() for prefix, net in nets for n, v in net.state_dict().items()}
    return draws_out, losses, grads0, final


def main():
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(14)
    restorer, diffusion = build_networks(gen, MaskSource(0.2, gen))
    init = {f"restorer.{k}": v.contiguous() for k, v in restorer.state_dict().items()}
    init.update({f"diffusion.{k}": v.contiguous() for k, v in diffusion.state_dict().items()})
    batches = make_batches(gen)
    tensors = dict(init)
    for i, b in enumerate(batches):
        tensors.update({f"batch{i}.{k}": v.contiguous() for k, v in b.items()})
    meta = {"generator": "scripts/reference_step.py", "torch": torch.__version__}
    save_file(tensors, str(OUT / "init.safetensors"), metadata=meta)
    print(f"init.safetensors: {(OUT / 'init.safetensors').stat().st_size} bytes")

    for idx, name in enumerate(SCENARIOS):
        s = settings(name)
        gen = torch.Generator().manual_seed(1000 + idx)
        masks = MaskSource(DIFFUSION["dropout"], gen)
        draws, losses, grads0, final = run(s, init, batches, gen, masks)
        # The same three steps in float64 from the same draws: how far float32 rounding alone
        # moves the result (reported, and the scale the Rust tolerances are checked against).
        replay = torch.cat(masks.drawn) if masks.drawn else None
        _, losses64, grads64, final64 = run(s, {k: v.double() for k, v in init.items()},
                                            [{k: v.double() for k, v in b.items()} for b in batches],
                                            None, MaskSource(DIFFUSION["dropout"], None),
                                            dtype=torch.float64, draws=draws, replay=replay)
        loss_dev = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
                       for a, b in zip(losses, losses64) for k in a if k != "lambda")
        w_dev = max((final[k].double() - final64[k]).abs().max().item() for k in final)
        g_dev = max((grads0[k].double() - grads64[k]).abs().max().item() for k in grads0)
        moved = max((final[k] - init[k]).abs().max().item() for k in final)

        out = {}
        for k, d in enumerate(draws):
            if "t" in d:
                out[f"step{k}.t"] = d["t"].to(torch.int64)
                out[f"step{k}.gamma"] = d["gamma"].float()
                out[f"step{k}.eps"] = d["eps"].float()
            for n in ("pos_swap", "neg_swap", "dropout"):
                if d.get(n) is not None:
                    out[f"step{k}.{n}"] = d[n].to(torch.uint8)
            for n, v in losses[k].items():
                out[f"step{k}.{n}"] = torch.tensor([v], dtype=torch.float64)
        out.update({f"grad0.{k}": v.contiguous() for k, v in grads0.items()})
        out.update({f"final.{k}": v.contiguous() for k, v in final.items()})
        meta = {"generator": "scripts/reference_step.py", "torch": torch.__version__,
                "settings": json.dumps(s, sort_keys=True),
                "f32_vs_f64": json.dumps({"loss_rel": loss_dev, "weights_abs": w_dev, "grads_abs": g_dev})}
        path = OUT / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=meta)
        print(f"{name}: {path.stat().st_size} bytes; losses {[round(l['total'], 6) for l in losses]}; "
              f"max |w - w0| {moved:.3g}; f32 vs f64: loss rel {loss_dev:.2g}, weights {w_dev:.2g}, "
              f"grads {g_dev:.2g}")


if __name__ == "__main__":
    main()
