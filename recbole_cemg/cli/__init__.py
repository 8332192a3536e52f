"""Command-line entry points: ``cemg-run``, ``cemg-compare`` and ``cemg-hyper`` (the checkout's scripts call them)."""
