"""Which names may become device, site and host names, and turning foreign ids into such names."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Device and site names end up in hosts files and resource names: RFC 1123 host-name labels,
# lower case only so that two names never differ by case alone.
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
NAME_RULE = "lowercase letters, digits and '-', starting with a letter, not ending with '-', at most 63"


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and bool(NAME_RE.match(name))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def sanitize(raw: str) -> str:
    """Make a valid name from a foreign id such as '1788' or '10.0.0.1' -> 'n1788', 'n10-0-0-1'."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = "n" + name
    return name[:63].rstrip("-")
