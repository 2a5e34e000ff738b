#!/usr/bin/env python3
"""Convert an authors' Noise-DA PyTorch checkpoint (.pth) to safetensors files daa loads.

    pip install torch safetensors
    python3 scripts/convert_official.py model.pth --range unit --out-dir converted/
    daa restore -i noisy.png -o restored.png --checkpoint converted/restorer.safetensors

The .pth holds a state_dict (possibly under a "state_dict", "params" or "model" key) whose
restorer tensors start with `RestorationNet.` and diffusion tensors with `denoise_fn.`
(a leading `module.` from DataParallel is dropped too). The prefixes are stripped; the names
that remain are the official ones daa's networks use. `restorer.safetensors` gets daa's
metadata (`daa.format`, `daa.backbone`: the paper's U-Net unless --backbone-json says
otherwise; `daa.range`: the value range the model was trained in, which the .pth does not
record: `unit` for the authors' denoising models, `signed` for deraining and deblurring) so
`daa restore` needs nothing else; `diffusion.safetensors` gets `daa.diffusion`.
Rust never reads pickle: only this script does, with torch.load(weights_only=True).
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

PAPER_UNET = {"kind": "unet", "in_channels": 3, "out_channels": 3, "width": 64, "depth": 4, "slope": 0.2}
PAPER_COND_UNET = {"in_channels": 9, "out_channels": 3, "width": 64, "mults": [1, 2, 4, 8], "res_blocks": 2,
                   "dropout": 0.2, "head_channels": 32, "groups": 32}


def state_dict_of(obj):
    for key in ("state_dict", "params", "params_ema", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def split(sd):
    parts = {"RestorationNet.": {}, "denoise_fn.": {}}
    for name, t in sd.items():
        if not torch.is_tensor(t):
            continue
        name = name[len("module."):] if name.startswith("module.") else name
        for prefix, out in parts.items():
            if name.startswith(prefix):
                out[name[len(prefix):]] = t.detach().float().contiguous()
    return parts["RestorationNet."], parts["denoise_fn."]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the .pth file")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--backbone-json", default=json.dumps(PAPER_UNET),
                   help="daa BackboneConfig of the restorer as JSON (default: the paper's U-Net)")
    p.add_argument("--diffusion-json", default=json.dumps(PAPER_COND_UNET),
                   help="daa CondUNetConfig of the diffusion network as JSON (default: the paper's)")
    p.add_argument("--range", required=True, choices=["unit", "signed"],
                   help="the range the model works in: unit ([0, 1], the authors' denoising) or "
                        "signed ([-1, 1], their deraining and deblurring)")
    args = p.parse_args()
    sd = state_dict_of(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    restorer, diffusion = split(sd)
    if not restorer:
        raise SystemExit(f"{args.checkpoint}: no tensor starts with RestorationNet. (found e.g. {list(sd)[:5]})")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(restorer, str(out / "restorer.safetensors"),
              metadata={"daa.format": "daa-restorer-v1", "daa.backbone": json.dumps(json.loads(args.backbone_json)),
                        "daa.range": args.range, "daa.source": Path(args.checkpoint).name})
    print(f"restorer: {len(restorer)} tensors, {sum(t.numel() for t in restorer.values())} parameters")
    if diffusion:
        save_file(diffusion, str(out / "diffusion.safetensors"),
                  metadata={"daa.format": "daa-diffusion-v1", "daa.diffusion": json.dumps(json.loads(args.diffusion_json)),
                            "daa.source": Path(args.checkpoint).name})
        print(f"diffusion: {len(diffusion)} tensors, {sum(t.numel() for t in diffusion.values())} parameters")


if __name__ == "__main__":
    main()
