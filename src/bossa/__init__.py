"""bossa: a telecom BSS core on one PostgreSQL journal."""

__version__ = "0.1.0"
