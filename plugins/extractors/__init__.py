"""Built-in extractors plugins of aanbench, one module per thing registered."""
