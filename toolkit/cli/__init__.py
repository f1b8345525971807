"""The `cnlab` command line: typer commands that parse arguments, call the library and print.

Only this package imports typer and rich; the library below it reports progress through
callbacks. `main.py` holds the root app and the topology and doctor commands; each other module
registers one area's commands (`testbed.py`: up, down, status, exec, link, partition, heal).
"""

from .main import app, main, run

__all__ = ["app", "main", "run"]
