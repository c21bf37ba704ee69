"""Actuators act on infrastructure (Kubernetes, AWS, plug-ins); see ``base`` for the contract."""
