"""`python -m vssl` (what `torchrun -m vssl` runs) and the `vssl` console script."""

import sys


def run() -> None:
    """Import the command line, then run it.

    Importing it takes seconds (torch): a Ctrl-C in that time is one line and exit code 130 as
    well, not a traceback from inside an import (:func:`vssl.cli.main` handles the rest).
    """
    try:
        from vssl.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: vssl stopped while starting (Ctrl-C); nothing was written\n")
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
