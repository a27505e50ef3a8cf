//! snowpatrol-store
