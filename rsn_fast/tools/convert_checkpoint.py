"""Convert a checkpoint to our (MMPose 1.x) key layout.

``python -m rsn_fast.tools.convert_checkpoint --from official IN OUT`` reads an official-code file
(``{'model': state_dict}``, maybe with a ``module.`` prefix), maps the names (RSN_SPEC 14.4), folds every conv bias
into its BatchNorm running mean, and writes ``{'state_dict': ..., 'meta': {...}}``. ``--from mmpose`` normalises an
MMPose 0.x/1.x file (``keypoint_head.`` -> ``head.``, drops ``data_preprocessor.*``). ``--config`` additionally
checks the result against a model built from that config (strict).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from rsn_fast.models.checkpoint import convert_official_state_dict, read_state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsn_fast.tools.convert_checkpoint", description=__doc__)
    parser.add_argument("--from", dest="src", choices=["official", "mmpose"], required=True)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument(
        "--bgr-to-rgb", action="store_true", help="flip the stem's input channels (BGR -> RGB)"
    )
    parser.add_argument("--config", help="check the converted weights against this config's model (strict)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        parser.error(f"input checkpoint not found: {args.input}")
    if args.src == "official":
        obj = torch.load(args.input, map_location="cpu", weights_only=True)
        sd = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            parser.error(f"{args.input}: expected {{'model': state_dict}} or a state dict")
        sd = convert_official_state_dict(sd, bgr_to_rgb=args.bgr_to_rgb)
    else:
        sd = read_state_dict(args.input)
        if args.bgr_to_rgb:
            key = "backbone.top.top.0.conv.weight"
            sd[key] = sd[key].flip(1).contiguous()
    if args.config:
        from rsn_fast.models import build_model

        build_model(args.config).load_state_dict(sd, strict=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    meta = {"converted_from": args.src, "source": os.path.basename(args.input), "bgr_to_rgb": args.bgr_to_rgb}
    torch.save({"state_dict": sd, "meta": meta}, args.output)
    print(f"wrote {len(sd)} entries to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
