#!/usr/bin/env python3
"""The project's own PyTorch re-implementation of daa's two networks, for parity checks.

Written from the paper's description (docs/method.md section 4), like the Rust code; tensor
names are the official ones, so a state_dict of these modules has the names the authors'
checkpoints use. Running this file regenerates the two parity fixtures:

    pip install torch safetensors numpy
    python3 scripts/reference_nets.py
    # -> crates/daa-backbones/tests/data/parity_unet.safetensors       (restorer U-Net)
    # -> crates/daa-diffusion/tests/data/parity_cond_unet.safetensors  (CondUNet)

They hold random weights of a reduced-width restorer U-Net (width 8, depth 3) and CondUNet
(width 16, mults 1-2, one block per level, 8 groups, heads of 16), fixed inputs, and the outputs
of these PyTorch modules (float32, eval mode). The Rust tests
`crates/daa-backbones/tests/parity_unet.rs` and `crates/daa-diffusion/tests/parity_cond_unet.rs`
load the same weights by name and must match within 1e-5. The CondUNet fixture's weights are
also the network of `crates/daa-diffusion/tests/golden_adaptation.rs`
(scripts/golden_adaptation.py).
"""
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


class Block(nn.Module):
    def __init__(self, cin, cout, slope=0.2):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(slope))

    def forward(self, x):
        return self.block(x)


class Up(nn.Module):
    def __init__(self, cin, cout, slope=0.2):
        super().__init__()
        self.conv_up = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_block = Block(2 * cout, cout, slope)

    def forward(self, x, skip):
        up = self.conv_up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        return self.conv_block(torch.cat([up, skip], 1))


class UNet(nn.Module):
    """The restorer: returns the residual R(x); the restored image is x + R(x)."""

    def __init__(self, width=64, depth=4, cin=3, cout=3, slope=0.2):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth)]
        self.down_path = nn.ModuleList()
        prev = cin
        for ch in chans:
            self.down_path.append(Block(prev, ch, slope))
            prev = ch
        self.up_path = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.up_path.append(Up(prev, ch, slope))
            prev = ch
        self.last = nn.Conv2d(prev, cout, 3, padding=1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i + 1 < len(self.down_path):
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up in self.up_path:
            x = up(x, skips.pop())
        return self.last(x)


def gamma_embedding(gamma, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = gamma[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb, groups, dropout, resample=None):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, cout), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.resample = resample

    def _resample(self, x):
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x, emb):
        h = self.in_layers[:-1](x)
        h = self.in_layers[-1](self._resample(h))
        x = self._resample(x)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


class Attention(nn.Module):
    def __init__(self, ch, head_ch, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)
        self.heads = ch // head_ch

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        bs, width, length = qkv.shape
        ch = width // (3 * self.heads)
        q, k, v = qkv.reshape(bs * self.heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)
        return (x + self.proj_out(a)).reshape(b, c, h, w)


class CondUNet(nn.Module):
    """ADM / Palette-style noise predictor D(cat[y_noisy, cond_a, cond_b], gamma)."""

    def __init__(self, cin=9, cout=3, width=64, mults=(1, 2, 4, 8), res_blocks=2, dropout=0.2, head_ch=32, groups=32):
        super().__init__()
        emb = 4 * width
        self.width = width
        self.cond_embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = width * mults[0]
        input_ch = ch
        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(cin, ch, 3, padding=1)])])
        skips = [ch]
        for level, mult in enumerate(mults):
            for _ in range(res_blocks):
                self.input_blocks.append(nn.ModuleList([ResBlock(ch, width * mult, emb, groups, dropout)]))
                ch = width * mult
                skips.append(ch)
            if level != len(mults) - 1:
                self.input_blocks.append(nn.ModuleList([ResBlock(ch, ch, emb, groups, dropout, "down")]))
                skips.append(ch)
        self.middle_block = nn.ModuleList([ResBlock(ch, ch, emb, groups, dropout), Attention(ch, head_ch, groups),
                                           ResBlock(ch, ch, emb, groups, dropout)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(mults))[::-1]:
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), width * mult, emb, groups, dropout)]
                ch = width * mult
                if level and i == res_blocks:
                    layers.append(ResBlock(ch, ch, emb, groups, dropout, "up"))
                self.output_blocks.append(nn.ModuleList(layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(input_ch, cout, 3, padding=1))

    @staticmethod
    def _run(layers, h, emb):
        for layer in layers:
            h = layer(h) if isinstance(layer, nn.Conv2d) else layer(h, emb)
        return h

    def forward(self, x, gamma):
        emb = self.cond_embed(gamma_embedding(gamma, self.width))
        hs, h = [], x
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def main():
    from safetensors.torch import save_file

    torch.manual_seed(0)
    unet = UNet(width=8, depth=3).eval()
    cond = CondUNet(width=16, mults=(1, 2), res_blocks=1, head_ch=16, groups=8).eval()
    # Non-trivial GroupNorm affine parameters, so a swapped weight/bias would show.
    with torch.no_grad():
        for m in cond.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 16, 24)
    c_in = torch.randn(2, 9, 16, 24)
    gamma = torch.tensor([0.9, 0.2])
    with torch.no_grad():
        restorer = {f"restorer.{k}": v.contiguous() for k, v in unet.state_dict().items()}
        restorer.update({"unet_input": x, "unet_residual": unet(x)})
        diffusion = {f"diffusion.{k}": v.contiguous() for k, v in cond.state_dict().items()}
        diffusion.update({"cond_input": c_in, "cond_gamma": gamma, "cond_output": cond(c_in, gamma)})
    meta = {"generator": "scripts/reference_nets.py", "torch": torch.__version__}
    for tensors, crate, name in [(restorer, "daa-backbones", "parity_unet"),
                                 (diffusion, "daa-diffusion", "parity_cond_unet")]:
        out = ROOT / "crates" / crate / "tests" / "data" / f"{name}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out), metadata=meta)
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    n_unet = sum(p.numel() for p in unet.parameters())
    n_cond = sum(p.numel() for p in cond.parameters())
    print(f"restorer {n_unet} + diffusion {n_cond} parameters")
    # The paper presets, for reference.
    print("paper restorer", sum(p.numel() for p in UNet().parameters()),
          "paper diffusion", sum(p.numel() for p in CondUNet().parameters()))


if __name__ == "__main__":
    main()
