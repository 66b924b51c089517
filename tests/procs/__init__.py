"""Real processes for the crash and race suites: the child (child.py), the receivers every
process connects (receivers.py) and the test-side helpers (helpers.py)."""
