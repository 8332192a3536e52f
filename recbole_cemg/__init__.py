"""CEMG: collaborative-enhanced multimodal generative recommendation, as a RecBole plugin."""

from recbole_cemg import compat

compat.apply()

__version__ = "0.1.0"
