"""Checks made before any long work starts (torch-free): outputs, settings, input rasters."""
