"""GA4GH TRS 2.0.1: this node's own registry (served at ``/ga4gh/trs/v2``) and the client that
fetches a run's workflow from a registry.

- :mod:`wes_bridge.trs.models`: the TRS data model.
- :mod:`wes_bridge.trs.registry`: the registry read from a folder of workflows.
- :mod:`wes_bridge.trs.client`: ``workflow_url`` forms that name a TRS workflow, and fetching one,
  checked, into a run directory.
"""
