//! Tests of the blobstore providers.
