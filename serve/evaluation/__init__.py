"""Scoring real answers against gold, and the live evaluation of a running gateway."""
