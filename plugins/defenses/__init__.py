"""Built-in training-time defenses (adversarial training), one module each."""
