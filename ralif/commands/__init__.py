"""CLI commands, one module each (see ralif.cli)."""
