"""Mapping on a Ray cluster: the cluster connection, workers, block jobs."""
