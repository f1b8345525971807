"""Terminal output shared by the commands: rich for people, plain JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# The --json option every command that prints a table offers.
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")
