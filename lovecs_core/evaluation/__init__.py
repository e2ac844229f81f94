"""Accuracy of a map against reference labels: metrics and reports."""
