"""zbs-csi: the Kubernetes CSI driver for SmartX ZBS over iSCSI."""

__version__ = "0.1.0"
