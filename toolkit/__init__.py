"""cnlab: testbeds, deployments and experiments for community networks."""

__version__ = "0.1.0"
