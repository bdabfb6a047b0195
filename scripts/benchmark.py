#!/usr/bin/env python
"""Speed benchmark: the framework vs a DataLoader loop vs a minimal loop (see dann/bench.py)."""
import sys

from dann.bench import cli

if __name__ == "__main__":
    sys.exit(cli())
