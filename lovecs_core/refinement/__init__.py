"""Interactive refinement: the user's corrections on the map, a head fitted to them in seconds,
the persistent engine session that holds a view's features, and accuracy on held-out clicks."""
