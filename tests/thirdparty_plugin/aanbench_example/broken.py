"""A plugin module that fails at import time (on purpose, for the tests)."""

raise ImportError("this example plugin is broken on purpose")
