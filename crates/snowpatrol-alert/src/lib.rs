//! snowpatrol-alert
