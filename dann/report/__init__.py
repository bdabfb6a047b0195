"""Reporting: the paper's numbers, the table built from run records (``dann-table``), figures,
feature analysis (PAD, t-SNE) and reading W&B runs."""
