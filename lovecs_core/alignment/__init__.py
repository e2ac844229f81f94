"""Radiometric alignment of a scene to the model: bit depth, normalisation, tone."""
