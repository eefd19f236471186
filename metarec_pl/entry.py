"""The ``metarec`` console script.  ``metarec plugins`` is answered here, importing only pluggy and the registry
(no torch, Lightning, W&B or ``datasets``); every other subcommand goes to ``metarec_pl.cli`` (LightningCLI).

``metarec plugins [--check]``: the table of registered names (kind, name, distribution, plugin, reference), then one
line per skipped plugin or name; ``--check`` also imports every lazy reference and exits 2 if anything is broken.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

PLUGINS_USAGE = "usage: metarec plugins [--check]"


def plugins_command(args: Sequence[str]) -> int:
    """Run ``metarec plugins <args>``; returns the exit code (2 for a bad argument or a failed ``--check``)."""
    if any(a in ("-h", "--help") for a in args):
        print(PLUGINS_USAGE)
        print(__doc__.split("``metarec plugins [--check]``: ", 1)[1].strip())
        return 0
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(f"metarec: error: unknown argument '{unknown[0]}' for 'metarec plugins', expected --check or "
              f"nothing ({PLUGINS_USAGE})", file=sys.stderr)
        return 2
    from metarec_pl import plugins

    return plugins.print_table(sys.stdout, check="--check" in args)


def answered_plugins(args: Sequence[str]) -> bool:
    """Answer ``metarec plugins ...`` (exit code 2 on a problem); ``False`` when ``args`` name another subcommand."""
    if list(args[:1]) != ["plugins"]:
        return False
    code = plugins_command(args[1:])
    if code:
        sys.exit(code)
    return True


def main(argv: Optional[Sequence[str]] = None) -> None:
    if answered_plugins(list(sys.argv[1:] if argv is None else argv)):
        return
    from metarec_pl.cli import main as cli_main  # imports Lightning

    cli_main(argv)


if __name__ == "__main__":
    main()
