//! snowpatrol-sources
