"""zbs-lite's iSCSI data plane: chunk servers, LUN masking, CHAP and the VIP redirector.

See docs/zbs-lite-iscsi.md. The management plane only needs `DataPlane`.
"""

from zbs_lite.iscsi.dataplane import DataPlane

__all__ = ["DataPlane"]
