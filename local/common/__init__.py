"""Shared helpers every room may use: the user-error type (`errors`), atomic file writes (`io_utils`)
and config loading with its documented defaults (`config`). Imports nothing else from local/."""
