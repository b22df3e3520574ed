"""The plan catalog: plans, their limits and their prices."""
