"""Data-loss checks: plant a user's unrelated files in a folder, snapshot every byte, compare later."""
import os
from pathlib import Path
from typing import Dict

USER_FILES = {"notes.txt": b"my notes\n", "thesis/chapter1.tex": b"\\section{Intro}\n", ".git/HEAD": b"ref: main\n",
              "photos/cat.jpg": bytes(range(256)) * 4}


def plant_user_files(folder: Path, tag: str = "") -> Path:
    """Write :data:`USER_FILES` (contents suffixed with ``tag``) under ``folder``; return it."""
    for rel, data in USER_FILES.items():
        p = Path(folder) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data + tag.encode())
    return Path(folder)


def snapshot(root: Path) -> Dict[str, object]:
    """Every entry under ``root`` (relative path -> file bytes, ``"<dir>"``, or ``"-> target"`` for links)."""
    root = Path(root)
    out: Dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_bytes()
    return out
