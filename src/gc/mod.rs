//! Disk-threshold image GC and graph-based pruning: the pure policies, and running them on the stores.

pub mod outcome;
pub mod policy;
pub mod prune;
pub mod run;
