"""Legion Monitor: monitoring for multi-agent AI systems and the machines they run on."""

__version__ = "0.1.0"
