"""Helpers shared by the docs tests of several kinds."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


RUNNABLE = re.compile(r"^```bash runnable\n(.*?)^```$", re.S | re.M)
