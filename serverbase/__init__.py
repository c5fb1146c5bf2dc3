"""serverbase package."""
