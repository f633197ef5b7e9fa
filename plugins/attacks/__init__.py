"""Built-in attacks, one module each."""
