"""One validated model of each file srd reads, ``srd.yaml`` first.

``files`` turns YAML into a validated model with errors naming file, line and key; ``types``
holds the base types (``Strict``, ``SecretRef``) and ``resolve``, the step after validation
that reads what a model names outside its file (validators do no I/O); ``durations`` reads
``5s`` and ``1 hour``. Each section of ``srd.yaml`` has its module (``server``, ``runtime``,
``probes``, ``discovery``, ``evaluation``, ``failover``, ``journal``, ``ha``, ``actuators``);
``root`` holds the root model and the loader entry points, re-exported here.
"""

from srd.config.files import ConfigError, ConfigIssue
from srd.config.root import Config, Mode, load_config, parse_config

__all__ = ["Config", "ConfigError", "ConfigIssue", "Mode", "load_config", "parse_config"]
