"""Writes the golden fixtures of tests/golden_transformers.rs with the reference PyTorch code.

    RESTORMER_ARCH=.../Restormer/basicsr/models/archs/restormer_arch.py \
    UFORMER_MODEL=.../Uformer/model.py \
    python3 golden_transformers.py

References: github.com/swz30/Restormer at 861974ad, github.com/ZhendongWang6/Uformer at
4ce7d9b9 (needs torch, einops, and timm or a stand-in for timm.models.layers' DropPath,
to_2tuple and trunc_normal_; inference in eval mode does not use DropPath). Every parameter
is set from a seeded normal distribution so that no path is trivially zero; the network runs
in float64. Each file holds the state_dict (minus buffers) and `golden.input` (B, 3, H, W),
`golden.residual` (network output minus input) and `golden.features` (the bottleneck, NCHW).
"""
import importlib.util
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))


def write(model, feat_module, x, to_nchw, file, seed):
    model = model.double().eval()
    randomise(model, seed)
    feats = {}
    feat_module.register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
    with torch.no_grad():
        y = model(x)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()
               if not k.endswith("relative_position_index")}
    tensors["golden.input"] = x
    tensors["golden.residual"] = (y - x).contiguous()
    tensors["golden.features"] = to_nchw(feats["f"]).contiguous()
    save_file(tensors, os.path.join(HERE, file))


def write_keys(model, file):
    lines = sorted(f"{k} {list(v.shape)}" for k, v in model.state_dict().items()
                   if not k.endswith("relative_position_index"))
    with open(os.path.join(HERE, file), "w") as f:
        f.write("\n".join(lines) + "\n")


g = torch.Generator().manual_seed(0)
R = load(os.environ["RESTORMER_ARCH"], "restormer_arch")
# RestormerConfig::tiny() at width 4: blocks [1,1,1,1], 1 refinement, heads [1,2,2,4], conv
# biases, WithBias LayerNorm.
net = R.Restormer(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
                  ffn_expansion_factor=2.66, bias=True, LayerNorm_type="WithBias")
x = torch.rand(2, 3, 16, 24, generator=g, dtype=torch.float64)
write(net, net.latent, x, lambda f: f, "golden_restormer_tiny.safetensors", 1)
# The denoising variant: BiasFree LayerNorm, no conv biases, two blocks per level.
net = R.Restormer(dim=4, num_blocks=[2, 1, 1, 2], num_refinement_blocks=2, heads=[1, 2, 2, 4],
                  ffn_expansion_factor=2.66, bias=False, LayerNorm_type="BiasFree")
x = torch.rand(1, 3, 8, 16, generator=g, dtype=torch.float64)
write(net, net.latent, x, lambda f: f, "golden_restormer_biasfree.safetensors", 2)

U = load(os.environ["UFORMER_MODEL"], "uformer_model")
# RestormerConfig::paper() (the reference's defaults) and UformerConfig::paper() (Uformer-B).
write_keys(R.Restormer(), "restormer_paper_keys.txt")
write_keys(U.Uformer(embed_dim=32, win_size=8, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1], modulator=True),
           "uformer_paper_keys.txt")
# Four levels, C = 2, 2x2 windows, shifted windows in the second block of the levels with two
# blocks, modulator on; the reference needs square inputs and img_size = the input side.
net = U.Uformer(img_size=32, embed_dim=2, depths=[1, 2, 1, 1, 2, 1, 1, 2, 1],
                num_heads=[1, 1, 2, 2, 4, 4, 2, 2, 1], win_size=2, mlp_ratio=2.0,
                token_projection="linear", token_mlp="leff", modulator=True)
x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)


def tokens_to_nchw(f):
    b, l, c = f.shape
    s = int(l ** 0.5)
    return f.view(b, s, s, c).permute(0, 3, 1, 2)


write(net, net.conv, x, tokens_to_nchw, "golden_uformer_small.safetensors", 3)
