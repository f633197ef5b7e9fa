"""Built-in fine-tuning strategies, one module each."""
