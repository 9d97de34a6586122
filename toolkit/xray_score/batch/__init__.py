"""Scoring folders: resilient worker pools, the batch scorer, the results ledger, nightly jobs."""
