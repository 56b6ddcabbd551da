"""Print a model's parameter count and conv GMACs: ``python -m rsn_fast.tools.summary CONFIG [--json]``.

With ``--json`` the last line is ``{"params": int, "gmacs": float}``. GMACs come from torch's FLOP counter
(``torch.utils.flop_counter``) on meta tensors for one image at the config's input size, counting every head
(see :func:`rsn_fast.models.complexity.count_gmacs`).
"""

from __future__ import annotations

import argparse
import json
import sys

from rsn_fast.config import load_config
from rsn_fast.models import build_model
from rsn_fast.models.complexity import count_gmacs, count_params


def summarize(config: str, overrides: list[str] | None = None) -> dict:
    """Build the model of ``config`` (on the meta device) and return params, per-part params and GMACs."""
    import torch

    cfg = load_config(config, overrides)
    with torch.device("meta"):
        model = build_model(cfg)
    m = cfg.model
    return {
        "name": cfg.name,
        "params": count_params(model),
        "backbone_params": count_params(model.backbone),
        "head_params": count_params(model.head),
        "state_dict_entries": len(model.state_dict()),
        "input_size": list(m.input_size),
        "gmacs": round(count_gmacs(model, tuple(m.input_size), m.in_channels), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rsn_fast.tools.summary", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--json", action="store_true", help="end with one JSON line {params, gmacs}")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    info = summarize(args.config, args.opt)
    w, h = info["input_size"]
    print(f"model {info['name']}: input {h}x{w} (HxW)")
    print(
        f"  params        {info['params']:,} (backbone {info['backbone_params']:,}, head {info['head_params']:,})"
    )
    print(f"  state dict    {info['state_dict_entries']} entries")
    print(f"  conv GMACs    {info['gmacs']:.3f} (per image, all heads)")
    if args.json:
        print(json.dumps({"params": info["params"], "gmacs": info["gmacs"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
