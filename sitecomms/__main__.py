"""The `sitecomms` console script (and `python -m sitecomms`): the command, or one line saying what to install.

The command (`sitecomms.cli`) is the server's: it needs the `server` extra. Installed with the
client SDK alone, `sitecomms` prints the `pip install` line that adds it and exits 1, as it
does when a command needs another missing extra (a `redis://` bus without `sitecomms[redis]`),
instead of a traceback.
"""

from __future__ import annotations

import sys

from sitecomms.extras import MissingExtra, missing_extra


def main() -> None:
    try:
        from sitecomms.cli import main as command
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc, "the sitecomms command")
        if missing is None:
            raise
        sys.exit(f"sitecomms: {missing}")
    try:
        command()
    except MissingExtra as exc:
        sys.exit(f"sitecomms: {exc}")


if __name__ == "__main__":
    main()
