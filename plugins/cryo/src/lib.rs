//! Shared cryo-ET science for tomoflow plugins.
