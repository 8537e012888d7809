"""Simulators of vendor APIs that cannot run here (commercial control panels, hypervisor
managers, registries), each built from its vendor's published documentation and labelled
"simulated" wherever the tests use it."""
