//! `ha-s3`: the S3 transfers behind the `aws s3 cp` stand-in of a local-cloud host
//! (`local-cloud/standins/aws` parses the CLI's arguments and calls this). It talks to the
//! local cloud's S3 with the real SDK, so an object a host uploads is really in S3:
//!
//!   ha-s3 put BUCKET KEY            stdin -> object
//!   ha-s3 get BUCKET KEY            object -> stdout
//!   ha-s3 get-prefix BUCKET PREFIX DIR   every object under PREFIX -> DIR/<rest of key>
//!
//! Endpoint and credentials come from the environment the stand-in sets
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
//!
//! `put` reads all of stdin before it sends anything, then one PutObject: a transfer
//! interrupted before its end (the process killed) leaves no object, as the real CLI's
//! multipart upload of a stream leaves none (no CompleteMultipartUpload). Exit codes and
//! error lines are the CLI's for `s3 cp` (`awscli/topics/return-codes.rst`: 1, "at least one
//! or more s3 transfers failed"); the stand-in prints them from what this prints.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use aws_sdk_s3::primitives::ByteStream;

fn client() -> aws_sdk_s3::Client {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let credentials = aws_sdk_s3::config::Credentials::new(
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        std::env::var("AWS_SESSION_TOKEN").ok(),
        None,
        "ha-standin",
    );
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(var("AWS_ENDPOINT_URL"))
        .region(aws_sdk_s3::config::Region::new(var("AWS_REGION")))
        .credentials_provider(credentials)
        // fakecloud serves buckets by path, not by virtual host.
        .force_path_style(true)
        // The CLI's defaults: 60 s to connect and to read (`--cli-connect-timeout`,
        // `--cli-read-timeout`, AWS CLI Command Reference, global options), not the SDK's
        // 3.1 s connect timeout, which a loaded test machine exceeds.
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(60))
                .read_timeout(std::time::Duration::from_secs(60))
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The CLI's rendering of a service error: "An error occurred (Code) when calling the
/// Operation operation: message".
fn service_error<E>(operation: &str, error: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match error.as_service_error() {
        Some(service) => format!(
            "An error occurred ({}) when calling the {operation} operation: {}",
            service.code().unwrap_or("Unknown"),
            service.message().unwrap_or("")
        ),
        None => format!(
            "Could not connect to the endpoint URL: {}",
            aws_sdk_s3::error::DisplayErrorContext(error)
        ),
    }
}

async fn put(bucket: &str, key: &str) -> Result<(), String> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading stdin: {e}"))?;
    client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| service_error("PutObject", &e))?;
    Ok(())
}

async fn get(bucket: &str, key: &str, out: &mut dyn Write) -> Result<(), String> {
    let object = client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            // The CLI asks HeadObject first: a missing key is its 404.
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                format!(
                    "An error occurred (404) when calling the HeadObject operation: Key \"{key}\" does not exist"
                )
            } else {
                service_error("GetObject", &e)
            }
        })?;
    let mut body = object.body;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?
    {
        out.write_all(&chunk)
            .map_err(|e| format!("writing s3://{bucket}/{key}: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing: {e}"))
}

async fn get_prefix(bucket: &str, prefix: &str, dir: &str) -> Result<Vec<String>, String> {
    let client = client();
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| service_error("ListObjectsV2", &e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut written = Vec::new();
    for key in keys {
        let rest = key[prefix.len()..].trim_start_matches('/');
        if rest.is_empty() || rest.split('/').any(|part| part == "..") {
            continue;
        }
        let path = PathBuf::from(dir).join(rest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let mut file = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        get(bucket, &key, &mut file).await?;
        written.push(format!("s3://{bucket}/{key}\t{}", path.display()));
    }
    Ok(written)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["put", bucket, key] => put(bucket, key).await,
        ["get", bucket, key] => get(bucket, key, &mut std::io::stdout().lock()).await,
        ["get-prefix", bucket, prefix, dir] => get_prefix(bucket, prefix, dir).await.map(|w| {
            for line in w {
                println!("{line}");
            }
        }),
        _ => {
            eprintln!(
                "usage: ha-s3 put BUCKET KEY | get BUCKET KEY | get-prefix BUCKET PREFIX DIR"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}
