"""The version of ofa-sdk (one place; `ofa_sdk.__version__` re-exports it)."""

__version__ = "0.1.0"
