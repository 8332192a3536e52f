"""Train and evaluate CEMG (or any RecBole model) from a checkout; installed, the same command is ``cemg-run``.

See ``recbole_cemg/cli/run.py`` (or ``python run_cemg.py --help``) for the options.
"""

from recbole_cemg.cli.run import main

if __name__ == "__main__":
    main()
