"""Tiled mapping of a raster: tiles, blending, the tile engine, writers, resampling, Ray."""
