"""Curated reference data files (package data)."""
