"""Simulated humanoid payloads: profiles and pre-serialized frames (only stamps are patched)."""
