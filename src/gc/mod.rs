//! Disk-threshold image GC and graph-based pruning: the pure policies.

pub mod policy;
pub mod prune;
