//! The `blobstore` providers.
