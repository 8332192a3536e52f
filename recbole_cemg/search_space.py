"""Check a search-space file (RecBole's ``.hyper`` format) before ``HyperTuning`` reads it: RecBole's reader fails
with a bare ``FileNotFoundError`` or ``ValueError`` that names neither the file nor the line."""

from __future__ import annotations

import ast
import os

from recbole_cemg.errors import InputError, MissingFileError

# How many comma-separated numbers each kind of range takes; ``choice`` takes a list.
RANGES = {"uniform": 2, "quniform": 3, "loguniform": 2}
FORMAT = ("each line is `name kind values`: `name choice [a,b]`, `name uniform low,high`, "
          "`name quniform low,high,q` or `name loguniform low,high` (bounds of the log)")


def check_params_file(path: str) -> dict[str, int]:
    """Raise a ``UserError`` naming ``path`` (and the line) if it is missing or a line is not a search range;
    return each searched key with its line number."""
    if not os.path.isfile(path):
        raise MissingFileError(f"params file not found: {path} (working directory {os.getcwd()}). Give a search "
                               "space in RecBole's .hyper format, e.g. --params_file=hyper/cemg.hyper.")
    searched = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if parts and not _is_range(parts):
                raise InputError(f"{path}:{number}: {line.strip()!r} is not a search range; {FORMAT}.")
            if parts:
                searched[parts[0]] = number
    return searched


def check_searched_keys(path: str, searched: dict[str, int], known: set[str]) -> None:
    """A searched key outside ``known`` (the run's config keys) is a typo: every trial would be the same run."""
    for key, number in searched.items():
        if key not in known:
            raise InputError(f"{path}:{number}: '{key}' is not a config key of this run's model. Fix its name "
                             "(keys are case-sensitive; CEMG's are listed in properties/model/CEMG.yaml).")


def _is_range(parts: list[str]) -> bool:
    if len(parts) < 3:
        return False
    kind, values = parts[1], "".join(parts[2:])
    if kind == "choice":
        try:
            return isinstance(ast.literal_eval(values), list)
        except (ValueError, SyntaxError):
            return False
    bounds = values.split(",")
    return kind in RANGES and len(bounds) == RANGES[kind] and all(map(_is_number, bounds))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
