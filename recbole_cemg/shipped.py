"""Where the files shipped with the plugin lie: ``properties/`` (its YAML configs) and ``assets/`` (ml-100k features).

In a checkout (and an editable install) they are top-level folders of the repository; a regular install copies them
into the package. Either way, ``SHIPPED_ROOT`` is the folder that holds both.
"""

import os

PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
SHIPPED_ROOT = PACKAGE_DIR if os.path.isdir(os.path.join(PACKAGE_DIR, "properties")) else os.path.dirname(PACKAGE_DIR)
PROPERTIES_DIR = os.path.join(SHIPPED_ROOT, "properties")


def shipped_path(path: str) -> str:
    """A path written in the plugin's own YAML files, relative to ``SHIPPED_ROOT`` whatever the working directory."""
    return path if os.path.isabs(path) else os.path.join(SHIPPED_ROOT, path)
