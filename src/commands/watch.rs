//! `ccci janitor --watch`: see [`crate::janitor::watch`].
