"""Generated CSI v1.12.0 stubs (scripts/gen-proto.sh)."""
