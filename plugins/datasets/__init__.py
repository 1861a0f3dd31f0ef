"""Built-in datasets plugins of aanbench, one module per thing registered."""
