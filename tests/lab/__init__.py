"""Tests of the lab's daily work."""
