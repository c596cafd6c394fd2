"""zbs-csi: the Kubernetes CSI driver for SmartX ZBS over iSCSI."""
