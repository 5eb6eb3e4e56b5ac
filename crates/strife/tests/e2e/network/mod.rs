//! A whole network at once, as an operator runs it: the fault workload over every process
//! (`chaos`), operator mistakes and sick disks, etcd's lock-down, config files, and the
//! operator's tools run against live networks (`strife audit --live`, `strife bench`).

mod audit_live;
mod bench_smoke;
mod chaos;
mod config;
mod data_safety;
mod etcd_lockdown;
