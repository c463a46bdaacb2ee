"""Files shipped inside the package: prompt templates (``prompts/*.yaml``) and eval suites (``suites/*.yaml``).

They live here so that a wheel install (``pip install llmrank``, no checkout) has them; a checkout keeps
the documented top-level paths through links (``prompts/`` -> ``llmrank/assets/prompts``,
``eval/<suite>.yaml`` -> ``llmrank/assets/suites/<suite>.yaml``). Code finds them through
:func:`asset_dir`, which asks :mod:`importlib.resources`, so it works from a checkout, an editable install
and an installed wheel alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("prompts", "suites")


def asset_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` files (``prompts`` or ``suites``) as a filesystem path."""
    if kind not in KINDS:
        raise ValueError(f"unknown asset kind '{kind}' (one of {', '.join(KINDS)})")
    # a wheel installs as plain files, so the traversable is a real folder (no zip import to unpack)
    return Path(str(resources.files(__package__) / kind)).resolve()
