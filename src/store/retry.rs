//! Retries with backoff (to be written).
