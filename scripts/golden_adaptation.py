#!/usr/bin/env python3
"""Expected values of daa's AdaptationLoss, computed independently in PyTorch (float64).

The loss of docs/method.md section 2, steps 2-7: noise the clean image in diffusion space
[-1, 1] to level gamma with noise eps, run the CondUNet on the shuffled restored pair (positive
pass) and on the residual-swapped pair (negative pass), and form
d_pos, d_neg, hinge = max(0, d_pos - d_neg + 0.1) and noise = (d_pos + hinge) / 2.

The random draws (t, gamma, eps and both swap masks) are those the Rust loss makes from its
seed; the Rust test writes them, this script reads them. The network is the reference CondUNet
of scripts/reference_nets.py with the weights of the CondUNet parity fixture. Two steps:

    DAA_WRITE_ADAPTATION_DRAWS=/tmp/draws.safetensors \\
        cargo test -p daa-diffusion --test golden_adaptation
    python3 scripts/golden_adaptation.py /tmp/draws.safetensors
    # -> crates/daa-diffusion/tests/data/golden_adaptation.safetensors
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_nets  # noqa: E402
from reference_nets import CondUNet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates" / "daa-diffusion" / "tests" / "data"
MARGIN = 0.1


def gamma_embedding64(gamma, dim):
    """reference_nets.gamma_embedding in float64 (cos first), so the whole pass is float64."""
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0, dtype=torch.float64))
                      * torch.arange(half, dtype=torch.float64) / half)
    args = gamma[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def main():
    reference_nets.gamma_embedding = gamma_embedding64
    draws = load_file(sys.argv[1])
    eps = draws["eps"].double()
    gamma32 = draws["gamma"]  # float32, as the Rust loss feeds it to q_sample and the network
    gamma = gamma32.double()
    pos, neg = draws["pos_swapped"].bool(), draws["neg_swapped"].bool()
    b, c, h, w = eps.shape

    torch.manual_seed(7)
    clean = torch.rand(b, c, h, w)
    source_input = (clean + 0.1 * torch.randn(b, c, h, w)).clamp(0, 1)
    target_input = torch.rand(b, c, h, w)
    source_residual = 0.05 * torch.randn(b, c, h, w)
    target_residual = 0.05 * torch.randn(b, c, h, w)

    net = CondUNet(width=16, mults=(1, 2), res_blocks=1, head_ch=16, groups=8).eval()
    weights = load_file(str(DATA / "parity_cond_unet.safetensors"))
    net.load_state_dict({k[len("diffusion."):]: v for k, v in weights.items() if k.startswith("diffusion.")})
    net = net.double()

    def space(x):  # [0, 1] -> [-1, 1]
        return 2 * x.double() - 1

    g = gamma[:, None, None, None]
    y_noisy = g.sqrt() * space(clean) + (1 - g).sqrt() * eps

    def d(a, bb, swap):
        m = swap[:, None, None, None]
        slot_a, slot_b = torch.where(m, bb, a), torch.where(m, a, bb)
        cond = torch.cat([y_noisy, space(slot_a), space(slot_b)], 1)
        with torch.no_grad():
            pred = net(cond, gamma)
        return ((eps - pred) ** 2).mean()

    d_pos = d(source_input + source_residual, target_input + target_residual, pos)
    d_neg = d(source_input + target_residual, target_input + source_residual, neg)
    hinge = (d_pos - d_neg + MARGIN).clamp(min=0)
    noise = (d_pos + hinge) / 2
    out = DATA / "golden_adaptation.safetensors"
    tensors = {k: v.contiguous() for k, v in draws.items()}
    tensors.update({
        "clean": clean, "source_input": source_input, "target_input": target_input,
        "source_residual": source_residual, "target_residual": target_residual,
        "d_pos": d_pos.reshape(1), "d_neg": d_neg.reshape(1), "hinge": hinge.reshape(1),
        "noise": noise.reshape(1),
    })
    save_file(tensors, str(out), metadata={"generator": "scripts/golden_adaptation.py", "torch": torch.__version__})
    print(f"wrote {out} ({out.stat().st_size} bytes): d_pos {d_pos.item():.6f} d_neg {d_neg.item():.6f} "
          f"hinge {hinge.item():.6f} noise {noise.item():.6f}")


if __name__ == "__main__":
    main()
