//! Cold-start helpers shared by every function binary.

/// Unwrap a start-up step or log why the function cannot start and hand the error to the
/// runtime, which exits the process: Lambda then reports `Runtime.ExitError` with this
/// message in the function's log, instead of failing later on every event.
pub fn require<T>(step: &str, result: crate::Result<T>) -> Result<T, lambda_runtime::Error> {
    result.map_err(|error| {
        tracing::error!(step, error = %error, "cannot start");
        format!("cannot start: {step}: {error}").into()
    })
}
