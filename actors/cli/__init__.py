"""The ``agentq`` command line (``commands``) and its demo (``demo``)."""
