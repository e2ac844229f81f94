"""The model: its card and file, the networks, cross-sensor normalisation (CSN) layers."""
