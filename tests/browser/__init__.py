"""Browser tests: Playwright's Python package driving Debian's chromium (never a download)."""
