//! Helpers shared by the integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod backend;
pub mod devserver;
pub mod fs_server;
pub mod link;
pub mod moto;
pub mod mount;
pub mod proc_server;
pub mod s3s_fs;
pub mod tiny_server;
pub mod tls;
pub mod wait;
