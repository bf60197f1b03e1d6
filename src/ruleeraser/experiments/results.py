"""Write an experiment's rows as ``NAME.json`` and ``NAME.md``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_results(
    rows: list[dict], out: str | Path, name: str, to_markdown: Callable[[list[dict]], str]
) -> tuple[Path, Path]:
    """Write ``rows`` to ``out/NAME.json`` and their Markdown to ``out/NAME.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{name}.md").write_text(to_markdown(rows))
    return out / f"{name}.json", out / f"{name}.md"
