"""minilog package."""
