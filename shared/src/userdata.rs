//! Instance user data, rendered from the scripts kept in `scripts/instance/` (shellcheck
//! runs on them in `make test`). Only the stack's settings go in: never a secret.

const WEB_TEMPLATE: &str = include_str!("../../scripts/instance/web-user-data.sh");

/// The web tier's user data for this stack's port and health check path.
pub fn web(port: i32, health_check_path: &str) -> String {
    WEB_TEMPLATE
        .replace("__WEB_PORT__", &port.to_string())
        .replace("__HEALTH_CHECK_PATH__", health_check_path)
}

/// RunInstances takes user data base64-encoded.
pub fn encode(script: &str) -> String {
    aws_smithy_types::base64::encode(script.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let script = web(8080, "/healthz");
        assert!(!script.contains("__"), "an unfilled placeholder remains");
        assert!(script.contains(r#"readonly WEB_PORT="8080""#));
        assert!(script.contains(r#"readonly HEALTH_CHECK_PATH="/healthz""#));
        assert!(script.starts_with("#!/usr/bin/env bash"));
    }

    #[test]
    fn user_data_fits_the_ec2_limit_and_carries_no_secret() {
        let encoded = encode(&web(80, "/healthz"));
        assert!(encoded.len() < 16 * 1024, "EC2 limits user data to 16 KiB");
        let lower = web(80, "/healthz").to_lowercase();
        for word in ["password=", "secret=", "aws_secret_access_key"] {
            assert!(!lower.contains(word), "user data mentions {word}");
        }
    }
}
