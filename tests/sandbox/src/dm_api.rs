//! Serde types of the DM-master HTTP API (see ../shared/reference/dm-master-api.md).
