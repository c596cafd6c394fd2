"""zbs-lite: a local ZBS-compatible storage service (management API, iSCSI chunk servers, VIP redirector)."""
