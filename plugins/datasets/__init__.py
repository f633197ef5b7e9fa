"""Built-in datasets, one module (or package) each."""
