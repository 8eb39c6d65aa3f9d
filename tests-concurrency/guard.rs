//! A guard against this suite silently not being compiled or run.

/// `cargo test` must build and run this target; `ci/test.sh` checks that this test ran.
#[test]
fn concurrency_suite_is_compiled() {
    assert_eq!(env!("CARGO_CRATE_NAME"), "concurrency");
}
