"""Where torchslim looks for data and caches: explicit argument, then environment, then beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The ready recipes: in a checkout torchslim/recipes links to recipes/; an installed wheel holds copies.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def data_dir_candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data directories to try, in order: `explicit`, $TORCHSLIM_DATA, ../shared/data beside the repo."""
    out: list[Path] = []
    if explicit:
        out.append(Path(explicit).expanduser())
    if os.environ.get("TORCHSLIM_DATA"):
        out.append(Path(os.environ["TORCHSLIM_DATA"]).expanduser())
    out.append(REPO_ROOT.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def find_data_file(relative: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """First existing `dir/relative` over the candidate data directories, else None."""
    for d in data_dir_candidates(explicit):
        if (d / relative).is_file():
            return d / relative
    return None


def cache_dir() -> Path:
    """Cache for artefacts made by benchmarks (baselines trained here...): $TORCHSLIM_CACHE or ~/.cache/torchslim.

    Kept outside the repository on purpose: results, not sources.
    """
    d = Path(os.environ.get("TORCHSLIM_CACHE", Path.home() / ".cache" / "torchslim")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d
