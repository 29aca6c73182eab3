"""Writing evaluation results: JSON, a Markdown table, and the benchmark's contact sheet.

Every file is written through :func:`trellis_ext.atomic.atomic_file` (complete or absent).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from trellis_ext.atomic import atomic_file

__all__ = ["write_json", "write_text", "metrics_table", "contact_sheet", "METRIC_LABELS"]

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips_vgg": "LPIPS-VGG", "lpips_alex": "LPIPS-Alex",
                 "clip": "CLIP-S", "iou": "silhouette IoU", "flicker": "flicker", "fvd": "FVD (pooled)",
                 "chamfer": "Chamfer (cube units)"}
SHEET_GAP = 4            # pixels between contact-sheet tiles
SHEET_LABEL_HEIGHT = 14  # pixels of the label strip above each row
SHEET_BACKGROUND = 255


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o):
    """NaN / inf -> None (JSON has no NaN)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(path: str | Path, data: dict) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(_clean(data), f, indent=2, default=_json_default)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "—"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def metrics_table(rows: dict[str, dict], title: Optional[str] = None) -> str:
    """Markdown: one row per result (``{row name: summary["metrics"]}``), one column per metric, then
    the list of skipped metrics with their reasons."""
    names = []
    for m in rows.values():
        for k in m:
            if k not in names:
                names.append(k)
    arrows = {k: ("↑" if next((m[k]["higher_is_better"] for m in rows.values() if k in m), False) else "↓")
              for k in names}
    lines = [f"## {title}", ""] if title else []
    lines.append("| | " + " | ".join(f"{METRIC_LABELS.get(k, k)} {arrows[k]}" for k in names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for row, m in rows.items():
        cells = [_fmt(m[k]["value"]) if k in m else "" for k in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    flick = [(row, m["flicker"].get("ground_truth")) for row, m in rows.items()
             if "flicker" in m and m["flicker"].get("ground_truth") is not None]
    if flick:
        lines.append("Ground truth's own flicker: " + ", ".join(f"{r} {_fmt(v)}" for r, v in flick) + ".")
        lines.append("")
    skipped = {}
    for m in rows.values():
        for k, e in m.items():
            if e["status"] != "computed" and e.get("reason"):
                skipped.setdefault(k, e["reason"])
    if skipped:
        lines.append("Not computed:")
        lines += [f"- {METRIC_LABELS.get(k, k)}: {r}" for k, r in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def contact_sheet(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: str | Path, tile: int = 128) -> None:
    """A PNG grid: one labelled row per ``(label, images)``; images uint8 [H, W, 3], resized to ``tile`` high."""
    from PIL import Image, ImageDraw

    rows = [(label, list(imgs)) for label, imgs in rows if len(imgs)]
    cols = max(len(imgs) for _, imgs in rows)
    row_h = tile + SHEET_LABEL_HEIGHT
    sheet = Image.new("RGB", (cols * (tile + SHEET_GAP) + SHEET_GAP, len(rows) * (row_h + SHEET_GAP) + SHEET_GAP),
                      (SHEET_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(sheet)
    for r, (label, imgs) in enumerate(rows):
        y = SHEET_GAP + r * (row_h + SHEET_GAP)
        draw.text((SHEET_GAP, y), label, fill=(0, 0, 0))
        for c, img in enumerate(imgs):
            im = Image.fromarray(np.asarray(img, np.uint8)[..., :3]).resize((tile, tile), Image.Resampling.LANCZOS)
            sheet.paste(im, (SHEET_GAP + c * (tile + SHEET_GAP), y + SHEET_LABEL_HEIGHT))
    with atomic_file(path, "wb") as f:
        sheet.save(f, format="PNG")
