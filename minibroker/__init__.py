"""minibroker package."""
