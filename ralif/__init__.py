"""ralif: active learning for image labeling with influence functions (Xia & Henao, TMLR 2023)."""

__version__ = "0.1.0"
