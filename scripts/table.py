#!/usr/bin/env python
"""The paper's table from results records: ``python scripts/table.py RUN_DIRS...`` (= ``dann-table``)."""

from dann.report.table import cli

if __name__ == "__main__":
    cli()
