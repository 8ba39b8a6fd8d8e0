//! Instance user data, rendered from the scripts kept in `scripts/instance/` (shellcheck
//! runs on them in `make test`). Only the stack's settings go in: never a secret.
//!
//! The web user data also writes the health check endpoint the target group probes: a PHP
//! script behind nginx that queries the database through the node's Router, the way
//! WordPress does, so a node that would answer every page with a 500 (php-fpm unable to
//! read wp-config.php, Router down, no primary) fails its check. What the sweep does when
//! every node fails it is in the healing task.

const WEB_TEMPLATE: &str = include_str!("../../../scripts/instance/web-user-data.sh");

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

    /// The text of the block that starts with `opening` and ends at the next line `}` of the
    /// same indentation.
    fn block<'a>(script: &'a str, opening: &str) -> &'a str {
        let start = script
            .find(opening)
            .unwrap_or_else(|| panic!("no {opening}"));
        let indent = &script[script[..start].rfind('\n').map_or(0, |i| i + 1)..start];
        let end = script[start..]
            .find(&format!("\n{indent}}}"))
            .expect("block end");
        &script[start..start + end]
    }

    /// The health check path is PHP's answer, not nginx's: nginx alone said "ok" while every
    /// WordPress page was a 500.
    #[test]
    fn the_health_check_path_is_answered_by_php_through_php_fpm() {
        let script = web(80, "/healthz");
        let location = block(&script, "location = ${HEALTH_CHECK_PATH} {");
        assert!(
            !location.contains("return"),
            "nginx answers itself:\n{location}"
        );
        assert!(
            location.contains("fastcgi_pass unix:/run/php-fpm/www.sock;"),
            "{location}"
        );
        assert!(
            location.contains("fastcgi_param SCRIPT_FILENAME ${HEALTH_SCRIPT};"),
            "{location}"
        );
        // The settings WordPress uses, from the file WebRouter writes.
        assert!(
            location.contains("fastcgi_param WP_CONFIG ${WEB_ROOT}/wp-config.php;"),
            "{location}"
        );
        assert!(script.contains("readonly HEALTH_SCRIPT=/usr/share/nginx/ha-health/health.php"));
        assert!(script.contains("readonly WEB_ROOT=/usr/share/nginx/wordpress"));
        // Outside the web root: reachable only through the health check path.
        assert!(!"/usr/share/nginx/ha-health/".starts_with("/usr/share/nginx/wordpress/"));
    }

    /// The endpoint: connects where WordPress connects, with short timeouts, runs a trivial
    /// query, 200 only then; 503 with a fixed reason otherwise; never cached.
    #[test]
    fn the_health_endpoint_queries_the_database_with_short_timeouts() {
        let script = web(80, "/healthz");
        let php = script
            .split_once("cat > \"$HEALTH_SCRIPT\" <<'PHP'\n<?php\n")
            .expect("the health script")
            .1;
        let php = php.split_once("\nPHP\n").expect("its end").0;
        assert!(php.contains("header('Cache-Control: no-store"), "{php}");
        assert!(php.contains("$_SERVER['WP_CONFIG']"), "{php}");
        for name in ["DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST"] {
            assert!(php.contains(&format!("'{name}'")), "{name} not read");
        }
        // Not included: that would bootstrap WordPress (wp-settings.php).
        assert!(
            !php.contains("require") && !php.contains("include"),
            "{php}"
        );
        assert!(php.contains("MYSQLI_OPT_CONNECT_TIMEOUT, 2)"), "{php}");
        // Through the Router a hung server costs two reads (tests/tests/web_health.rs).
        assert!(php.contains("MYSQLI_OPT_READ_TIMEOUT, 1)"), "{php}");
        assert!(php.contains("$db->query('SELECT 1')"), "{php}");
        assert!(php.contains("http_response_code(503)"), "{php}");
        // Every answer is a fixed string: nothing from the settings or the driver's errors.
        for line in php.lines().filter(|l| l.contains("unhealthy('")) {
            let reason = line.split("unhealthy('").nth(1).expect("reason");
            assert!(
                reason.ends_with("');") && !reason.contains('$'),
                "a reason that is not a fixed string: {line}"
            );
        }
        assert!(
            !php.contains("->error") && !php.contains("connect_error"),
            "{php}"
        );
        assert!(php.trim_end().ends_with("echo \"ok\\n\";"), "{php}");
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
