"""Image classifiers trained end to end on the labeled images."""
