"""LoveCS engine."""
