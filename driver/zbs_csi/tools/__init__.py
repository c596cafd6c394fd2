"""Small tools around the driver (a CSI client for troubleshooting and the quickstart)."""
