"""pbclients: administration of a health and wellness practice's client roster."""

__version__ = "0.1.0"
