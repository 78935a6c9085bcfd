"""Files written whole or not at all: a reader, a crash or a concurrent writer never sees
half a file or half a directory."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable


def write_atomic(path: str, content: str) -> None:
    """Writes `path` whole or not at all: a reader (or a crash) never sees half a file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)  # a failed write leaves no partial file behind
        raise


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed): what every
    plotting function here draws with before `save_figure`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
    """Saves a matplotlib figure as PNG whole or not at all, closes it; returns the file name."""
    import matplotlib.pyplot as plt

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        plt.close(fig)
    return os.path.basename(path)


def publish_dir(path: str, fill: Callable[[str], None]) -> None:
    """Fills a fresh temporary directory with `fill(tmp)`, then renames it to `path`; a
    concurrent publisher that got there first wins, and its directory is the one kept."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-", dir=os.path.dirname(path))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(path):
            raise


def read_json(path: str, what: str) -> dict:
    """A JSON object file; a missing, unreadable or non-object file is an error naming `what`
    and the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} {path!r}: {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path!r} is not a JSON object")
    return value


def read_text(path: str, what: str) -> str:
    """A UTF-8 text file's contents; unreadable or not UTF-8 is a ValueError naming `what`."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {what} {path!r}: {e}") from e
