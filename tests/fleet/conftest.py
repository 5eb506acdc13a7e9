"""Fixtures of the fleet tests: the headless browser (tests/browser.py)."""

from tests.browser import chrome

__all__ = ["chrome"]
