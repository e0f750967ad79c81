//! Failure injection (to be written).
