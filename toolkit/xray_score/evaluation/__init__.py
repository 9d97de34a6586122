"""Metrics with bootstrap intervals, paired model tests, and evaluation of result tables."""
