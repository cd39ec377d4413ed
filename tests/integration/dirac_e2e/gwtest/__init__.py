"""A minimal DISET service for the real-DIRAC end-to-end test (runs in the DIRAC venv)."""
