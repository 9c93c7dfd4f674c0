"""Data helpers: writing videos and the project's synthetic benchmark."""
