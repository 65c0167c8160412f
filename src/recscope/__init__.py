"""recscope: an explainable sequential recommender."""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP workers spin-wait for work by default, taking CPU from every other process
# on a shared machine (and from each other when a core is busy). Passive waiting must be in
# the environment before torch is first imported; values the user set are kept.
# (No effect if torch was imported before recscope.)
# Fully passive workers sleep between every pair of small parallel regions, which made the
# demo's epochs ~30% slower on an idle machine; a short spin (GOMP_SPINCOUNT, libgomp's knob:
# about microseconds) before sleeping keeps the idle speed and most of the gain beside other
# jobs (bench/epoch_time.py, numbers in bench/results/epoch_time.json).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

try:
    __version__ = version("recscope")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
