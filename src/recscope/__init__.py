"""recscope: an explainable sequential recommender."""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP workers spin-wait for work by default, taking CPU from every other process
# on a shared machine (and from each other when a core is busy). Passive waiting must be in
# the environment before torch is first imported; a value the user set is kept.
# (No effect if torch was imported before recscope.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("recscope")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
