"""Tablet side of the link: reference client and operator console."""
