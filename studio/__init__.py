"""Audio Studio: generate music, speech and sound effects with open models on your own machine."""

__version__ = "0.1.0"
