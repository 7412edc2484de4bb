"""The node's GA4GH TES 1.1 side: the embedded TES (models, store, scheduler, runner, backends)
and the link between a WES run and its TES tasks."""
