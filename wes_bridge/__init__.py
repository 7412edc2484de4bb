"""wes-bridge: a GA4GH WES 1.1 node with pluggable workflow engines.

The package is organised one concept per module:

- :mod:`wes_bridge.config`     operator settings (file, ``WES_BRIDGE_*`` env vars, CLI flags)
- :mod:`wes_bridge.plugin`     the public API engine adapters are written against
- :mod:`wes_bridge.registry`   discovery of adapters through the ``wes_bridge.engines`` entry points
- :mod:`wes_bridge.store`      the run store (SQLAlchemy; SQLite by default)
- :mod:`wes_bridge.staging`    turning a ``POST /runs`` request into a run directory
- :mod:`wes_bridge.drivers`    warm engine-driver processes, forked per run
- :mod:`wes_bridge.supervisor` the run state machine: queue, launch, watch, cancel, recover
- :mod:`wes_bridge.api`        the HTTP layer (WES router, error mapping)
- :mod:`wes_bridge.cli`        the ``wes-bridge`` command
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
