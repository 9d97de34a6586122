"""The classical path: HOG/LBP features (scikit-image) and a LightGBM classifier."""
