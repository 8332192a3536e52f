"""Hyper-parameter search from a checkout; installed, the same command is ``cemg-hyper``.

See ``recbole_cemg/cli/hyper.py`` (or ``python run_hyper.py --help``) for the options.
"""

from recbole_cemg.cli.hyper import main

if __name__ == "__main__":
    main()
