"""robench's built-in plugins. Each module is registered through the "robench" entry-point
group in pyproject.toml, exactly as a third-party plugin package would be."""
