"""The node plugin: connectors (how a LUN becomes a block device) and what sits above them."""
