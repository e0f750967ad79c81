//! Local S3 server (to be written).
