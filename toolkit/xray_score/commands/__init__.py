"""The commands ``cli.py`` exposes, one module each: options parsed here, work done in the
library rooms (io, model, batch, evaluation, report)."""
