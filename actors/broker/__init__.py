"""The Redis broker: its construction from the settings (``factory``) and the priority lanes (``lanes``)."""
