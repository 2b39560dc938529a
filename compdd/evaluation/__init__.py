"""Scoring distilled sets: protocols (versioned YAML), the trainer, label modes, result records."""
