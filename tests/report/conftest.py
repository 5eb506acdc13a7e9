"""Fixtures of the report tests: the headless Chromium of tests/browser.py."""

from tests.browser import chrome

__all__ = ["chrome"]
