"""The platform as it already runs, simulated: writers behaving like its file server and AI
backend (dev/stack/platform.py runs them on the local stack)."""
