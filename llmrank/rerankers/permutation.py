"""Reading a ranking such as ``[2] > [3] > [1]`` out of generated text, repairing what is wrong with it.

:func:`parse_permutation` never raises: whatever a model wrote (stray words, newlines, ``3, 1, 2``,
duplicated or unknown identifiers, an answer cut off by the token limit, nothing at all) becomes a
permutation of ``range(n)``, and each repair made on the way is counted:

- ``duplicate``    an identifier named again after its first mention (the later mention is dropped);
- ``out_of_range`` an identifier that is not one of ``1..n`` (dropped);
- ``missing``      an identifier never named (appended after the named ones, in the order they had before);
- ``unparseable``  the text named no identifier at all (the previous order is kept: ``missing == n``);
- ``truncated``    the text ends inside an identifier (``… > [1``); the fragment is ignored.

Identifiers are 1-based in the text (``[1]`` is the first passage shown) and 0-based in the result.
When the text contains bracketed identifiers (``[3]``) only those are read, so numbers in stray prose
(``Here are the 3 passages: …``) are not taken for identifiers; otherwise every integer is.
"""

from __future__ import annotations

import re
from collections import Counter

_BRACKETED = re.compile(r"\[\s*([0-9]+)\s*\]")
_TRUNCATED_BRACKET = re.compile(r"\[\s*[0-9]*\s*$")
_BARE = re.compile(r"(?<![0-9.])([0-9]+)(?![0-9]|\.[0-9])")


def parse_permutation(text: str | None, n: int) -> tuple[list[int], Counter]:
    """``(order, repairs)``: ``order`` is a permutation of ``range(n)`` (0-based, best first) read from
    ``text``; ``repairs`` counts each fix (see the module docstring). Never raises."""
    repairs: Counter = Counter()
    try:
        n = max(int(n), 0)
    except (TypeError, ValueError):
        n = 0
    if not isinstance(text, str):
        try:
            text = "" if text is None else str(text)
        except Exception:  # noqa: BLE001 - an object whose str() fails is simply unparseable
            text = ""
    if n == 0:
        return [], repairs

    if _BRACKETED.search(text):
        tokens = _BRACKETED.findall(text)
        if _TRUNCATED_BRACKET.search(text):
            repairs["truncated"] += 1
    else:
        tokens = _BARE.findall(text)

    if not tokens:
        repairs["unparseable"] += 1
        repairs["missing"] += n
        return list(range(n)), repairs

    seen: set[int] = set()
    order: list[int] = []
    for tok in tokens:
        # int() of a huge digit string is fine in Python; a very long one is simply out of range
        idx = int(tok) - 1 if len(tok) <= 12 else -1
        if not 0 <= idx < n:
            repairs["out_of_range"] += 1
        elif idx in seen:
            repairs["duplicate"] += 1
        else:
            seen.add(idx)
            order.append(idx)
    rest = [i for i in range(n) if i not in seen]
    if rest:
        repairs["missing"] += len(rest)
    return order + rest, +repairs


def is_permutation(order, n: int) -> bool:
    """Whether ``order`` names each of ``range(n)`` exactly once."""
    return len(order) == n and sorted(order) == list(range(n))
