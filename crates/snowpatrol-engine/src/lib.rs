//! snowpatrol-engine
