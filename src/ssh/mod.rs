//! SSH to the cluster hosts: one connection per host, reused for every command and transfer.
