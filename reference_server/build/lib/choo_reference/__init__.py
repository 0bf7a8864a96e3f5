"""Reference implementation of choo's DaemonService (package choo.v1)."""

__version__ = "0.1.0"
