"""Simulators of remote APIs that cannot run on a test machine (commercial control panels,
hypervisor managers, registries), each built from its vendor's published documentation
and labelled "simulated" wherever the tests use it."""
