"""Reject outputs and the reject scheduler."""
