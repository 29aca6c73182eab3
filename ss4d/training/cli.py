"""``ss4d-train`` (also ``python -m ss4d.training``; works under ``accelerate launch`` and ``torchrun``).

    ss4d-train --config FILE --data DIR --output RUN [--max-steps N] [--resume auto|none|PATH] [--seed S]
               [--init scratch|trellis:DIR|ss4d:DIR|run:DIR] [--set SECTION.KEY=VALUE ...]
               [--allow-config-change] [--no-progress]

Exit codes: 0 done; 2 bad input (config, dataset, init folder, a changed config on resume; one line on
stderr, nothing written); 1 the run stopped (non-finite loss: the step and the last good checkpoint named).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..exit_codes import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, report_error

__all__ = ["main", "build_parser", "PROG"]

PROG = "ss4d-train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train one SS4D stage (docs/training.md).")
    p.add_argument("--config", required=True, help="training config JSON (configs/train/*.json)")
    p.add_argument("--data", required=True, help="dataset folder written by ss4d-build-dataset")
    p.add_argument("--output", required=True, help="run folder (config.json, log.jsonl, checkpoints/)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps in total")
    p.add_argument("--resume", default="auto", help="auto (newest complete checkpoint, default), none, or a "
                                                    "checkpoint folder")
    p.add_argument("--seed", type=int, default=None, help="override trainer.seed")
    p.add_argument("--init", default=None, help="override init: scratch | trellis:DIR | ss4d:DIR | run:DIR | "
                                                      "inflate:RUN (a 3D-pretraining run, inflated to 4D)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by its dotted path, e.g. dataset.ss_encoder=ss_enc_conv3d or "
                        "trainer.lr=3e-4 (VALUE is read as JSON when it parses, else as a string)")
    p.add_argument("--allow-config-change", action="store_true", help="resume even though the config changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import load_config
    from .errors import TrainingStopped
    from .loop import train

    if args.max_steps is not None and args.max_steps < 0:
        print(f"{PROG}: error: --max-steps must be >= 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    overrides = {}
    if args.seed is not None:
        overrides["trainer"] = {"seed": args.seed}
    if args.init is not None:
        overrides["init"] = args.init
    try:
        for item in args.set:
            _set_override(overrides, item)
        cfg = load_config(args.config, overrides)
        summary = train(cfg, args.data, args.output, max_steps=args.max_steps, resume=args.resume,
                        allow_config_change=args.allow_config_change, progress=not args.no_progress)
    except TrainingStopped as e:
        print(f"{PROG}: stopped: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; resume with --resume auto", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (TrainingInputError -> exit 2; anything else is a bug, exit 1)
        return report_error(PROG, e, args.debug, nothing_written=False)
    print(f"{PROG}: {summary['step']} steps done; checkpoint {summary['checkpoint']}")
    return EXIT_OK


def _set_override(overrides: dict, item: str) -> None:
    """``a.b.c=VALUE`` -> overrides["a"]["b"]["c"] = VALUE (JSON if it parses, else the string)."""
    import json

    from .errors import TrainingInputError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise TrainingInputError(f"--set {item!r} is not KEY=VALUE", "e.g. --set trainer.lr=3e-4")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    node = overrides
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed


if __name__ == "__main__":
    sys.exit(main())
