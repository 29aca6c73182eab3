#!/usr/bin/env python
"""Build an SS4D 4D training set from animated 3D assets (same as the `ss4d-build-dataset` command).

    python scripts/data/build_dataset.py ../shared/data/assets -o outputs/ds --frames 8 --views 8 \
        --resolution 128 --feature-model tiny-random

See docs/data.md for the format, the steps and multi-machine runs.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from ss4d.data.build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
