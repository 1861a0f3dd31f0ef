"""aanbench's built-in plugins (installed as ``aanbench_plugins``): one sub-package per kind."""
