"""Built-in backbone providers, one module each."""
