"""Project checks schemathesis runs beside its own (SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

Loaded by tests/tests/api_fuzz.rs. Every answer of the API must be the documented JSON
error shape or a documented body, and none may leak an implementation detail.
"""

import schemathesis

LEAKS = ("panicked at", "stack backtrace", "RUST_BACKTRACE", "src/", ".rs:", "Traceback")


@schemathesis.check
def no_stack_traces(ctx, response, case):
    """No answer carries a panic message, a backtrace or a source path."""
    text = response.text or ""
    for leak in LEAKS:
        if leak in text:
            raise AssertionError(f"the answer leaks {leak!r}: {text[:300]}")


@schemathesis.check
def errors_say_what_to_change(ctx, response, case):
    """Every 4xx of the API is JSON with error.code and error.message.

    OPTIONS (a CORS preflight) is answered by API Gateway itself, never by the function,
    so its answer is API Gateway's to shape.
    """
    if case.method.upper() == "OPTIONS":
        return
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except Exception as error:  # noqa: BLE001 - any parse failure is the finding
            raise AssertionError(f"{response.status_code} is not JSON: {error}") from error
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
            raise AssertionError(f"{response.status_code} without error.code/message: {body}")
