"""Built-in models plugins of aanbench, one module per thing registered."""
