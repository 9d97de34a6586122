"""xray-score: batch scoring of pediatric chest X-rays (pneumonia vs normal)."""

__version__ = "0.3.0"
