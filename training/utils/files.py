"""File modes of what a run writes.

Some writers (safetensors through a temporary file) create files mode 0600 whatever the user's
umask; a team sharing an output directory then cannot read the weights beside readable configs.
``usual_modes`` gives every file and folder under a directory the mode a plain ``open`` / ``mkdir``
would have given it: 0666 / 0777 less the process umask.
"""
from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def usual_modes(root: str | os.PathLike) -> None:
    """chmod every file under ``root`` to 0666 & ~umask and every folder (``root`` too) to 0777 & ~umask."""
    mask = umask()
    root = Path(root)
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
        elif p.is_file():
            os.chmod(p, 0o666 & ~mask)
