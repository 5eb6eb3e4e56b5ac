//! A bank process (`strife bank`) driven directly over its own API, with the test playing the
//! gateway (or a stranger): the 2PC participant and its crash recovery, in-doubt resolution
//! against a stand-in coordinator, who may call it, its etcd registration, and a full disk
//! under it.

mod disk_full;
mod etcd_registration;
mod in_doubt;
mod mtls;
mod participant;
