//! etcd: its key space ([`keys`]), how every process reaches it and the lock-down of who may
//! write what ([`access`]), the bank and replica lists read from it ([`discovery`]), and a
//! process's own key kept alive under a lease ([`registration`]).

pub mod access;
pub mod discovery;
pub mod keys;
pub mod registration;
