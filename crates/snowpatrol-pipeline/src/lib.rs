//! snowpatrol-pipeline
