"""Built-in commands plugins of aanbench, one module per thing registered."""
