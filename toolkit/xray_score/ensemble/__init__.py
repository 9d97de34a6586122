"""Ensembles: bundles that average the logits of member bundles (any kinds)."""
