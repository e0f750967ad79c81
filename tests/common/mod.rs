//! Helpers shared by the integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod backend;
pub mod devserver;
pub mod moto;
pub mod mount;
pub mod tiny_server;
