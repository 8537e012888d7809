"""Simulators of vendor APIs that cannot run here, built from their published documentation."""
