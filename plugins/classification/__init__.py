"""Text classification task."""
