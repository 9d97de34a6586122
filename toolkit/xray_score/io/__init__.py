"""Input and output: finding files, canonical decoding, labeled folders, atomic result files."""
