//! ObjectStore over aws-sdk-s3 (to be written).
