"""Extractive question answering task helpers."""
