"""What a model is, whatever its kind: pipeline specs, the kind registry, bundles on disk,
calibration and the decision at the operating threshold, and training to a bundle."""
