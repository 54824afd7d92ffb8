"""Swap engines: classic (offline) now; inswapper when its weights are catalogued."""
