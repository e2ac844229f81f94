"""Source training: labelled windows, augmentation, optimisation."""
