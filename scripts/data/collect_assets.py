#!/usr/bin/env python
"""Put the small model's asset files in place from local git clones of their source repositories (fetches nothing).

    python scripts/data/collect_assets.py --clones DIR [--data-list checkpoints/ss4d-small/data.json]
                                          [--data-root ../shared/data]

Every file of the asset list (``data.json``: groups, held-out assets and sibling files) names its source as
``"owner/repo@commit:path"``. For each one missing under ``--data-root``, the file is read from the clone of
``owner/repo`` in ``DIR`` (a folder ``DIR/owner+repo``, ``DIR/owner/repo`` or ``DIR/repo``; bare or with a work tree;
it must contain the commit: ``git clone`` the repository, or ``git fetch`` the commit into it), checked against the
listed SHA-256 and written (atomically). A file already present with the listed bytes stays; one present with
other bytes is never replaced (it is reported: move it away to have it re-created). Prints a line per file and
exits 1 if any file is still missing or differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from trellis_ext.atomic import atomic_file  # noqa: E402

DEFAULT_DATA_LIST = REPO / "checkpoints" / "ss4d-small" / "data.json"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"


def listed_files(spec: dict) -> list:
    """Every entry of an asset list with a file: the groups', the held-out assets' and their siblings."""
    entries = [e for g in spec["groups"] for e in g["files"]] + spec["heldout"]
    return entries + [s for e in entries for s in e.get("siblings", [])]


def parse_source(source: str) -> tuple:
    """``"owner/repo@commit:path"`` -> (owner/repo, commit, path)."""
    repo, _, rest = source.partition("@")
    commit, _, path = rest.partition(":")
    if repo.count("/") != 1 or not commit or not path:
        raise ValueError(f"source {source!r} is not owner/repo@commit:path")
    return repo, commit, path


def find_clone(clones: Path, repo: str) -> Path | None:
    owner, name = repo.split("/")
    for candidate in (clones / f"{owner}+{name}", clones / owner / name, clones / name):
        if candidate.is_dir() and subprocess.run(["git", "-C", str(candidate), "rev-parse", "--git-dir"],
                                                 capture_output=True).returncode == 0:
            return candidate
    return None


def collect(spec: dict, clones: Path, root: Path) -> list:
    """Write the missing files; returns the problems (one line each), empty when every file is in place."""
    problems = []
    for entry in listed_files(spec):
        dst, want = root / entry["file"], entry["sha256"]
        if dst.is_file():
            if hashlib.sha256(dst.read_bytes()).hexdigest() == want:
                print(f"ok       {entry['file']}")
            else:
                problems.append(f"{dst} is there with other bytes than the listed ones (left as it is)")
            continue
        if "source" not in entry:
            problems.append(f"{entry['file']}: the list names no source")
            continue
        repo, commit, path = parse_source(entry["source"])
        clone = find_clone(clones, repo)
        if clone is None:
            problems.append(f"{entry['file']}: no clone of {repo} in {clones} (git clone https://github.com/{repo} "
                            f"{clones / repo.replace('/', '+')})")
            continue
        got = subprocess.run(["git", "-C", str(clone), "show", f"{commit}:{path}"], capture_output=True)
        if got.returncode != 0:
            problems.append(f"{entry['file']}: {repo} @ {commit[:12]} : {path} not in {clone} "
                            f"({got.stderr.decode(errors='replace').strip()})")
            continue
        if hashlib.sha256(got.stdout).hexdigest() != want:
            problems.append(f"{entry['file']}: {repo} @ {commit[:12]} : {path} has other bytes than the listed ones")
            continue
        try:
            with atomic_file(dst, "wb") as f:         # a failed write leaves no partial file
                f.write(got.stdout)
        except OSError as e:
            problems.append(f"{dst}: cannot write it ({e})")
            continue
        print(f"written  {entry['file']}  <- {repo} @ {commit[:12]} : {path}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clones", required=True, help="folder with git clones of the source repositories")
    ap.add_argument("--data-list", default=str(DEFAULT_DATA_LIST), help="the asset list (data.json)")
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="where the listed files go")
    args = ap.parse_args(argv)
    try:
        spec = json.loads(Path(args.data_list).read_text())
        listed_files(spec)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read the asset list {args.data_list} ({e})", file=sys.stderr)
        return 2
    if shutil.which("git") is None:
        print("error: git not found: the files are read from git clones", file=sys.stderr)
        return 2
    try:
        problems = collect(spec, Path(args.clones), Path(args.data_root))
    except ValueError as e:
        print(f"error: {args.data_list}: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
